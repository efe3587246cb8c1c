"""The orchestrator as a service: the HTTP API, its event stream of state changes, metrics, and the live page.
It reads the graph and hands the core events only through the orchestrator's loop (`Orchestrator.call`)."""
from .feed import ChangeFeed
from .server import TOKEN_ENV, ApiServer, parse_address

__all__ = ["ApiServer", "ChangeFeed", "TOKEN_ENV", "parse_address"]
