"""Event sources: each an emitter of ObjectCreated events into the orchestrator's one queue."""
from .memory import MemoryPushSource
from .polling import PollingSource, diff_listing
from .watch import LocalWatchSource

__all__ = ["PollingSource", "LocalWatchSource", "MemoryPushSource", "diff_listing"]
