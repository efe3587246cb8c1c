"""The runtime: the orchestrator loop, handler registration and context, the worker side of an attempt, and
completion notifications."""
from .context import HandlerContext
from .handlers import HandlerRegistry, handler
from .orchestrator import EventQueue, Orchestrator, RunOptions, RunResult, tune_garbage_collection

__all__ = ["HandlerContext", "HandlerRegistry", "handler", "Orchestrator", "RunOptions", "RunResult",
           "EventQueue", "tune_garbage_collection"]
