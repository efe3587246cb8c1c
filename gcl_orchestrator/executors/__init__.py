"""Executors: where handlers run. Each runs the worker side of `runtime/` (`runtime.worker.run_task`) somewhere
and reports every outcome into the orchestrator's one queue."""
from .process import ProcessExecutor
from .thread import ThreadExecutor

__all__ = ["ProcessExecutor", "ThreadExecutor"]
