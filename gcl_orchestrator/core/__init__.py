"""The pure scheduling core: events in, instructions out, time passed in. Imports only `model` and `errors`."""
from .scheduler import ComputationRecord, Rejection, Scheduler, SchedulerConfig

__all__ = ["Scheduler", "SchedulerConfig", "ComputationRecord", "Rejection"]
