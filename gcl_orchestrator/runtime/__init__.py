"""The runtime: the orchestrator loop, handler registration and context, executors, and the status document."""
from .context import HandlerContext
from .executors import ProcessExecutor, ThreadExecutor
from .handlers import HandlerRegistry, handler
from .orchestrator import EventQueue, Orchestrator, RunOptions, RunResult, tune_garbage_collection
from .status import STATUS_KEY, read_status, render_status

__all__ = ["HandlerContext", "HandlerRegistry", "handler", "Orchestrator", "RunOptions", "RunResult",
           "EventQueue", "ProcessExecutor", "ThreadExecutor", "STATUS_KEY", "read_status", "render_status",
           "tune_garbage_collection"]
