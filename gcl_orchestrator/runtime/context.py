"""What a handler sees: `ctx`, its inputs, its params, and `emit` to grow the graph."""
from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, Callable, Mapping

from ..errors import HandlerError, Problem, SpecError
from ..interfaces import ObjectStore
from ..model import ComputationBlocked, ComputationResumed, ComputationSpec, SpecsSubmitted, check_key, thaw
from ..gcl import spec_from_mapping

Signal = Callable[[object], None]
DEFAULT_MAX_EMIT = 10_000


def max_emit() -> int:
    """How many computations one attempt may emit and submit (`gclo run --max-emit`, via GCLO_MAX_EMIT)."""
    try:
        return int(os.environ.get("GCLO_MAX_EMIT", DEFAULT_MAX_EMIT))
    except ValueError:
        return DEFAULT_MAX_EMIT


class HandlerContext:
    """One attempt of one computation.

    `computation`, `handler_type`, `inputs`, `output`, `params` (a plain dict copy), `attempt` (from 1);
    `read_bytes/read_text/read_json(key)` read one of the declared inputs (the key may be left out when there is
    exactly one) or a key waited for; `emit(...)` declares a next computation, validated at once, which joins the
    graph with this handler's output; `submit(...)` makes one join at once, and `wait_for(keys)` blocks until keys
    exist; `log` is a logger for this handler.
    """

    def __init__(self, spec: ComputationSpec, attempt: int, store: ObjectStore, signal: Signal | None = None):
        self.spec = spec
        self.computation = spec.computation
        self.handler_type = spec.handler_type
        self.inputs = spec.inputs
        self.output = spec.output
        self.params: dict[str, Any] = thaw(spec.params)
        self.attempt = attempt
        self.log = logging.getLogger(f"gclo.handler.{spec.handler_type}")
        self._store = store
        self._emitted: dict[str, ComputationSpec] = {}
        self._waited: set[str] = set()
        self._signal = signal or (lambda _event: None)
        self._budget = max_emit()
        self.wants_completions = False

    # --- inputs ------------------------------------------------------------------------------------------------

    def _input_key(self, key: str | None) -> str:
        if key is None:
            if len(self.inputs) != 1:
                raise HandlerError(f"computation {self.computation!r} has {len(self.inputs)} inputs: "
                                   "name the key to read")
            return self.inputs[0]
        if key not in self.inputs and key not in self._waited:
            raise HandlerError(f"{key!r} is not an input of computation {self.computation!r} "
                               f"(inputs: {', '.join(self.inputs) or 'none'}); declare it in the GCL inputs")
        return key

    def read_bytes(self, key: str | None = None) -> bytes:
        return self._store.get(self._input_key(key)).body

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

    def submit(self, spec: Mapping[str, Any] | None = None, /, **fields: Any) -> ComputationSpec:
        """Like `emit`, but the computation joins the graph now, while this handler still runs, so that the
        handler can `wait_for` its output. It is also written into this handler's output GCL, like an emitted
        computation, so an orchestrator that restarts from the store alone still knows it."""
        built = self._keep(self._build(spec, fields))
        self._signal(SpecsSubmitted(f"submitted by {self.computation}", (built,),
                                    self.handler_type if self.wants_completions else None))
        return built

    def wait_for(self, *keys: str, timeout_s: float | None = None, poll_s: float = 0.2) -> None:
        """Block until every key exists (then they can be read). Meanwhile this handler's worker slot is lent to
        other work, so waiting for work in the same pool cannot deadlock. TimeoutError names what never came."""
        for key in keys:
            check_key(key)
        pending = [k for k in keys if not self._store.exists(k)]
        self._waited.update(keys)
        if not pending:
            return
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        self._signal(ComputationBlocked(self.computation, self.attempt, tuple(pending)))
        try:
            delay = poll_s
            while pending:
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(f"computation {self.computation!r} waited {timeout_s:g}s for "
                                       f"{', '.join(repr(k) for k in pending)}, which never came")
                time.sleep(delay)  # polling the store: a handler has no event queue of its own
                pending = [k for k in pending if not self._store.exists(k)]
                delay = min(delay * 1.5, 2.0)
        finally:
            self._signal(ComputationResumed(self.computation, self.attempt))

    def _keep(self, built: ComputationSpec) -> ComputationSpec:
        previous = self._emitted.get(built.computation)
        if previous is not None and previous != built:
            raise HandlerError(f"computation {built.computation!r} emitted twice with different fields")
        self._emitted[built.computation] = built
        return built

    def _build(self, spec: Mapping[str, Any] | None, fields: Mapping[str, Any]) -> ComputationSpec:
        self._budget -= 1
        if self._budget < 0:
            raise HandlerError(f"computation {self.computation!r} emitted more than {max_emit()} computations; "
                               "if this fan-out is intended, raise the limit with gclo run --max-emit")
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
