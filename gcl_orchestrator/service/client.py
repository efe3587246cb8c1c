"""A small client of the HTTP API for the CLI (`gclo submit`, `gclo cancel`): the standard library only."""
from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from ..errors import ConfigError, GclError

URL_ENV = "GCLO_API_URL"
TOKEN_ENV = "GCLO_API_TOKEN"  # the token the API takes, and the client sends


class ApiUnreachable(GclError):
    """No API answered at that address."""


class ApiClient:
    def __init__(self, url: str, token: str | None = None, timeout_s: float = 30.0):
        if not url.startswith(("http://", "https://")):
            url = "http://" + url
        self.url = url.rstrip("/")
        self.token = token or os.environ.get(TOKEN_ENV)
        if not self.token:
            raise ConfigError(f"the API at {self.url} needs its token: --token TOKEN or {TOKEN_ENV}")
        self.timeout_s = timeout_s

    @classmethod
    def from_options(cls, url: str | None, token: str | None) -> "ApiClient | None":
        """The client for --api (or GCLO_API_URL), None when neither is given."""
        url = url or os.environ.get(URL_ENV)
        return cls(url, token) if url else None

    def request(self, method: str, path: str, body: bytes | None = None,
                content_type: str = "application/yaml") -> tuple[int, Any]:
        """(status, decoded JSON body). Raises ApiUnreachable when nothing answers."""
        request = urllib.request.Request(self.url + path, data=body, method=method,
                                         headers={"Authorization": f"Bearer {self.token}",
                                                  **({"Content-Type": content_type} if body is not None else {})})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            try:
                doc = json.loads(exc.read() or b"null")
            except ValueError:
                doc = {"error": exc.reason}
            return exc.code, doc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiUnreachable(f"no API answers at {self.url}: {reason}") from None

    def computation_path(self, name: str, verb: str = "") -> str:
        return f"/v1/computations/{urllib.parse.quote(name, safe='')}" + (f"/{verb}" if verb else "")
