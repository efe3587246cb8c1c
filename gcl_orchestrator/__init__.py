"""gcl-orchestrator: an S3-compatible bucket as an engine for computation graphs that grow while they run.

The handler API is what handler modules import:

    from gcl_orchestrator import handler

    @handler("csv_profile")
    def profile(ctx):
        ...
"""
from .errors import DeadlockError, GclError, PermanentHandlerError, SpecError, SubmissionRejected, WaitFailed
from .model import Completion, ComputationSpec
from .runtime.context import HandlerContext, SubmitHandle
from .runtime.handlers import handler

__version__ = "0.1.0"
__all__ = ["handler", "HandlerContext", "SubmitHandle", "Completion", "ComputationSpec", "GclError", "SpecError",
           "PermanentHandlerError", "WaitFailed", "SubmissionRejected", "DeadlockError",
           "__version__"]
