"""The orchestrator as a service: the HTTP API, its event stream of state changes, metrics, and the live page.
It reads the graph and hands the core events only through the orchestrator's loop (`Orchestrator.call`).

The server's names are imported when first asked for: uvicorn and Starlette are for `--api`, not for every
command (`gclo submit` and `gclo cancel` need only the client)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .client import TOKEN_ENV
from .feed import ChangeFeed

if TYPE_CHECKING:
    from .server import ApiServer, parse_address

_SERVER_NAMES = ("ApiServer", "parse_address")


def __getattr__(name: str) -> Any:
    if name in _SERVER_NAMES:
        from . import server
        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ApiServer", "ChangeFeed", "TOKEN_ENV", "parse_address"]
