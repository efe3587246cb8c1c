"""What a handler sees: `ctx`, its inputs, its params, and `emit` to grow the graph."""
from __future__ import annotations

import json
import logging
from typing import Any, Mapping

from ..errors import HandlerError, Problem, SpecError
from ..interfaces import ObjectStore
from ..model import ComputationSpec, thaw
from ..spec import spec_from_mapping


class HandlerContext:
    """One attempt of one computation.

    `computation`, `handler_type`, `inputs`, `output`, `params` (a plain dict copy), `attempt` (from 1);
    `read_bytes/read_text/read_json(key)` read one of the declared inputs (the key may be left out when there is
    exactly one); `emit(...)` declares a next computation, validated at once; `log` is a logger for this handler.
    """

    def __init__(self, spec: ComputationSpec, attempt: int, store: ObjectStore):
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
        self.wants_completions = False

    # --- inputs ------------------------------------------------------------------------------------------------

    def _input_key(self, key: str | None) -> str:
        if key is None:
            if len(self.inputs) != 1:
                raise HandlerError(f"computation {self.computation!r} has {len(self.inputs)} inputs: "
                                   "name the key to read")
            return self.inputs[0]
        if key not in self.inputs:
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
        merged = {**(dict(spec) if spec else {}), **fields}
        try:
            json.dumps(merged)
        except (TypeError, ValueError) as exc:
            raise SpecError([Problem("", f"values must be JSON data ({exc})")],
                            f"emit from {self.computation!r}") from None
        built = spec_from_mapping(merged, source=f"emit from {self.computation!r}")
        previous = self._emitted.get(built.computation)
        if previous is not None and previous != built:
            raise HandlerError(f"computation {built.computation!r} emitted twice with different fields")
        self._emitted[built.computation] = built
        return built

    def notify_on_completion(self) -> None:
        """Ask that this handler type's `@handler.on_complete` function be told when each computation this
        attempt emits ends (as if each named it in `notify`)."""
        self.wants_completions = True

    @property
    def emitted(self) -> tuple[ComputationSpec, ...]:
        return tuple(self._emitted.values())
