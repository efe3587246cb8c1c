"""What a handler sees: `ctx`, its inputs, its params, `emit` to grow the graph, and `submit` / `wait_for`, which
the orchestrator answers while the handler runs."""
from __future__ import annotations

import itertools
import json
import logging
import os
import threading
import time
from typing import Any, Callable, Mapping

from ..errors import DeadlockError, HandlerError, Problem, SpecError, SubmissionRejected, WaitFailed
from ..interfaces import ObjectStore
from ..model import (
    ComputationBlocked,
    ComputationResumed,
    ComputationSpec,
    SpecsSubmitted,
    SubmitAnswer,
    WaitOver,
    check_key,
    identity,
    thaw,
)
from ..gcl import spec_from_mapping
from ..gcl.metadata import gcl_fingerprint
from ..gcl.loader import MAX_EMIT_LIMIT
from .attempt_log import AttemptLogBuffer, muted

DEFAULT_MAX_EMIT = 10_000
ANSWER_TIMEOUT_S = 60.0  # how long a submission waits for the orchestrator's answer


def max_emit() -> int:
    """How many computations one attempt may emit and submit (`gclo run --max-emit`, via GCLO_MAX_EMIT)."""
    try:
        return min(int(os.environ.get("GCLO_MAX_EMIT", DEFAULT_MAX_EMIT)), MAX_EMIT_LIMIT)
    except ValueError:
        return DEFAULT_MAX_EMIT


class ReplyBox:
    """The channel between one running attempt and the orchestrator: `send` puts an event into the
    orchestrator's queue (through whatever the executor provides); the executor `put`s the core's replies
    (WaitOver, SubmitAnswer) here, and `receive` takes the one a handler call waits for."""

    def __init__(self, send: Callable[[object], None]):
        self._send = send
        self._cond = threading.Condition()
        self._replies: list[object] = []

    def send(self, event: object) -> None:
        self._send(event)

    def put(self, message: object) -> None:
        with self._cond:
            self._replies.append(message)
            self._cond.notify_all()

    def receive(self, accept: Callable[[object], bool], timeout_s: float | None) -> object | None:
        """The first reply `accept` takes, or None after `timeout_s` (None: wait as long as it takes)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            while True:
                for i, message in enumerate(self._replies):
                    if accept(message):
                        return self._replies.pop(i)
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._wait(remaining)

    def _wait(self, remaining: float | None) -> None:
        """Wait, holding `_cond`, until a reply may have come into `_replies` or `remaining` seconds passed."""
        self._cond.wait(remaining)


class _AttemptLog(logging.LoggerAdapter):
    """`ctx.log`: every line names the computation and the attempt. Lines also go into the attempt's own log
    (`record`), INFO and above whatever the orchestrator's log level, DEBUG when the logger would pass it."""

    def __init__(self, logger: logging.Logger, extra: Mapping[str, object], record: AttemptLogBuffer | None = None):
        super().__init__(logger, extra)
        self._record = record

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[{self.extra['computation']} #{self.extra['attempt']}] {msg}", kwargs  # type: ignore[index]

    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        if self._record is not None and (level >= logging.INFO or self.isEnabledFor(level)):
            self._record.log_call(level, msg, args, kwargs.get("exc_info"))
        with muted():  # recorded already: a handler printing it to stderr must not record it twice
            super().log(level, msg, *args, **kwargs)


class SubmitHandle:
    """What `ctx.submit` returns: whether the orchestrator accepted the computation (`status` is "accepted" or
    "rejected", `errors` every reason for a rejection), the state it had when accepted, and `result()`, which
    waits for its output and returns it, or raises why it will never come."""

    def __init__(self, ctx: "HandlerContext", computation: str, output: str | None, status: str,
                 state: str | None = None, errors: tuple[str, ...] = ()):
        self._ctx = ctx
        self.computation = computation
        self.output = output
        self.status = status
        self.state = state
        self.errors = errors

    @property
    def accepted(self) -> bool:
        return self.status == "accepted"

    def __repr__(self) -> str:
        detail = f", state={self.state!r}" if self.accepted else f", errors={list(self.errors)!r}"
        return f"<SubmitHandle {self.computation!r} {self.status}{detail}>"

    def result(self, timeout_s: float | None = None) -> bytes:
        """The output's bytes, once it exists. Raises SubmissionRejected if the computation was refused,
        WaitFailed if it (or something it needs) failed, TimeoutError after `timeout_s`."""
        if not self.accepted or self.output is None:
            raise SubmissionRejected(f"computation {self.computation!r} was not accepted: "
                                     + "; ".join(self.errors))
        self._ctx.wait_for(self.output, timeout_s=timeout_s)
        return self._ctx.read_bytes(self.output)

    def text(self, timeout_s: float | None = None, encoding: str = "utf-8") -> str:
        return self.result(timeout_s).decode(encoding)

    def json(self, timeout_s: float | None = None) -> Any:
        body = self.result(timeout_s)
        try:
            return json.loads(body)
        except ValueError as exc:
            raise HandlerError(f"output {self.output!r} of computation {self.computation!r} is not JSON: "
                               f"{exc}") from None


class HandlerContext:
    """One attempt of one computation.

    `computation`, `handler_type`, `inputs`, `output`, `params` (a plain dict copy), `attempt` (from 1);
    `read_bytes/read_text/read_json(key)` read one of the declared inputs (the key may be left out when there is
    exactly one) or a key waited for; `emit(...)` declares a next computation, validated at once, which joins the
    graph with this handler's output; `submit(...)` makes one join at once and answers with a SubmitHandle;
    `wait_for(keys)` blocks until keys exist; `log` is a logger whose lines name this computation and attempt (and
    go into `log_record`, the attempt's own log, when given).
    """

    def __init__(self, spec: ComputationSpec, attempt: int, store: ObjectStore, channel: ReplyBox | None = None,
                 log_record: AttemptLogBuffer | None = None):
        self.spec = spec
        self.computation = spec.computation
        self.handler_type = spec.handler_type
        self.inputs = spec.inputs
        self._readable = frozenset(spec.inputs)  # a join reads each of its parts: one look-up each, not a scan
        self.output = spec.output
        self.params: dict[str, Any] = thaw(spec.params)
        self.attempt = attempt
        self.log = _AttemptLog(logging.getLogger(f"gclo.handler.{spec.handler_type}"),
                               {"computation": spec.computation, "attempt": attempt}, log_record)
        self._store = store
        self._emitted: dict[str, ComputationSpec] = {}
        self.read_versions: dict[str, str] = {}  # key -> identity of the version read
        self._waited: set[str] = set()
        self._channel = channel
        self._ids = itertools.count(1)
        self._budget = max_emit()
        self.wants_completions = False

    # --- inputs ------------------------------------------------------------------------------------------------

    def _input_key(self, key: str | None) -> str:
        if key is None:
            if len(self.inputs) != 1:
                raise HandlerError(f"computation {self.computation!r} has {len(self.inputs)} inputs: "
                                   "name the key to read")
            return self.inputs[0]
        if key not in self._readable and key not in self._waited:
            raise HandlerError(f"{key!r} is not an input of computation {self.computation!r} "
                               f"(inputs: {', '.join(self.inputs[:5]) or 'none'}"
                               f"{f' and {len(self.inputs) - 5} more' if len(self.inputs) > 5 else ''}); "
                               "declare it in the GCL inputs")
        return key

    def read_bytes(self, key: str | None = None) -> bytes:
        key = self._input_key(key)
        found = self._store.get(key)
        # what this run was computed from, as read: its output records it
        self.read_versions[key] = identity(found.info.digest, gcl_fingerprint(found.info.metadata))
        return found.body

    def read_text(self, key: str | None = None, encoding: str = "utf-8") -> str:
        return self.read_bytes(key).decode(encoding)

    def read_json(self, key: str | None = None) -> Any:
        key = self._input_key(key)
        try:
            return json.loads(self.read_bytes(key))
        except ValueError as exc:
            raise HandlerError(f"input {key!r} of computation {self.computation!r} is not JSON: {exc}") from None

    # --- growing the graph -------------------------------------------------------------------------------------

    def emit(self, spec: Mapping[str, Any] | None = None, /, **fields: Any) -> ComputationSpec:
        """Declare a next computation. Fields as in GCL; `spec` (a mapping) and keyword fields are merged.

        Raises SpecError at once when the spec is invalid, and HandlerError when a name is emitted twice
        with different contents. It joins the graph when this handler's output is written.
        """
        return self._keep(self._build(spec, fields))

    def submit(self, spec: Mapping[str, Any] | None = None, /, **fields: Any) -> SubmitHandle:
        """Like `emit`, but the computation joins the graph now, while this handler still runs, and the
        orchestrator answers at once: the handle says accepted (with the computation's state) or rejected (with
        every reason: invalid fields, a name or output already taken, a cycle). An accepted computation is also
        written into this handler's output GCL, so an orchestrator that restarts from the store alone knows it.
        `handle.result()` waits for its output."""
        merged = {**(dict(spec) if spec else {}), **fields}
        name = str(merged.get("computation", "?"))
        try:
            built = self._build(spec, fields)
        except SpecError as exc:
            return SubmitHandle(self, name, None, "rejected", errors=tuple(str(p) for p in exc.problems))
        previous = self._emitted.get(built.computation)
        if previous is not None and previous != built:
            return SubmitHandle(self, built.computation, built.output, "rejected",
                                errors=(f"computation {built.computation!r} was emitted by this attempt already, "
                                        "with different fields",))
        channel = self._require_channel("ctx.submit")
        request_id = next(self._ids)
        channel.send(SpecsSubmitted(f"submitted by {self.computation}", (built,),
                                    self.handler_type if self.wants_completions else None,
                                    (self.computation, self.attempt, request_id)))
        answer = channel.receive(lambda m: isinstance(m, SubmitAnswer) and m.request_id == request_id,
                                 ANSWER_TIMEOUT_S)
        if answer is None:
            raise HandlerError(f"the orchestrator did not answer the submission of {built.computation!r} within "
                               f"{ANSWER_TIMEOUT_S:g}s")
        assert isinstance(answer, SubmitAnswer)
        rejected = dict(answer.rejected)
        if built.computation in rejected:
            return SubmitHandle(self, built.computation, built.output, "rejected",
                                errors=(rejected[built.computation],))
        self._emitted[built.computation] = built
        return SubmitHandle(self, built.computation, built.output, "accepted", dict(answer.accepted).get(
            built.computation))

    def wait_for(self, *keys: str, timeout_s: float | None = None) -> None:
        """Block until every key exists (then they can be read). The orchestrator wakes this handler when they
        do, or at once when one of them never will: WaitFailed then names the computation that failed and its
        error. Meanwhile this handler's worker slot is lent to the work it waits for (its declared resources
        stay held), so waiting for work in the same pool cannot deadlock; a wait that can never be satisfied is
        ended with DeadlockError. TimeoutError after `timeout_s` names what never came."""
        for key in keys:
            check_key(key)
        self._waited.update(keys)
        if not keys:
            return
        channel = self._require_channel("ctx.wait_for")
        wait_id = next(self._ids)
        channel.send(ComputationBlocked(self.computation, self.attempt, tuple(dict.fromkeys(keys)), wait_id))
        over = channel.receive(lambda m: isinstance(m, WaitOver) and m.wait_id == wait_id, timeout_s)
        if over is None:
            channel.send(ComputationResumed(self.computation, self.attempt))
            raise TimeoutError(f"computation {self.computation!r} waited {timeout_s:g}s for "
                               f"{', '.join(repr(k) for k in keys[:5])}, which did not come")
        assert isinstance(over, WaitOver)
        if over.deadlock:
            raise DeadlockError(f"computation {self.computation!r} cannot wait for "
                                f"{', '.join(repr(k) for k in keys[:5])}: {over.deadlock}")
        if over.failures:
            reasons = "; ".join(
                f"{o.key!r} will not be produced: computation {o.computation!r} {o.state}"
                + (f" ({o.error})" if o.error else "") for o in over.failures[:5])
            raise WaitFailed(f"computation {self.computation!r} waited in vain: {reasons}", over.failures)

    def _require_channel(self, what: str) -> ReplyBox:
        if self._channel is None:
            raise HandlerError(f"{what} needs a running orchestrator to answer it")
        return self._channel

    def _keep(self, built: ComputationSpec) -> ComputationSpec:
        previous = self._emitted.get(built.computation)
        if previous is not None and previous != built:
            raise HandlerError(f"computation {built.computation!r} emitted twice with different fields")
        self._emitted[built.computation] = built
        return built

    def _build(self, spec: Mapping[str, Any] | None, fields: Mapping[str, Any]) -> ComputationSpec:
        self._budget -= 1
        if self._budget < 0:
            raise HandlerError(f"computation {self.computation!r} emitted more than {max_emit():,} computations; "
                               "if this fan-out is intended, raise the limit with gclo run --max-emit "
                               f"(at most {MAX_EMIT_LIMIT:,})")
        merged = {**(dict(spec) if spec else {}), **fields}
        try:
            json.dumps(merged)
        except (TypeError, ValueError) as exc:
            raise SpecError([Problem("", f"values must be JSON data ({exc})")],
                            f"emit from {self.computation!r}") from None
        return spec_from_mapping(merged, source=f"emit from {self.computation!r}")

    def notify_on_completion(self) -> None:
        """Ask that this handler type's `@handler.on_complete` function be told when each computation this
        attempt emits ends (as if each named it in `notify`)."""
        self.wants_completions = True

    @property
    def emitted(self) -> tuple[ComputationSpec, ...]:
        return tuple(self._emitted.values())
