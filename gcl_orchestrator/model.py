"""Plain data shared by every layer: computation specs, the events the core consumes, the instructions it emits,
object keys and metadata rules. Nothing here does I/O.
"""
from __future__ import annotations

import dataclasses
from collections import abc
import enum
import functools
import hashlib
import json
import random
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, NamedTuple

from .errors import InvalidKeyError

# Keys under this prefix belong to gcl-orchestrator itself: state, sidecar GCL, local-store metadata, rules.
RESERVED_PREFIX = ".gclo/"

# User-metadata field names (S3: x-amz-meta-gcl, x-amz-meta-gcl-ref).
META_GCL = "gcl"
META_GCL_REF = "gcl-ref"

PRIORITY_LEVELS: Mapping[str, int] = {"low": -100, "normal": 0, "high": 100, "critical": 200}
PRIORITY_MIN, PRIORITY_MAX = -1000, 1000

MAX_KEY_BYTES = 1024
# AWS counts the UTF-8 bytes of every user-metadata name and value against 2 KB. Other servers don't enforce it,
# but a pipeline that works locally must work on AWS, so every store is held to it.
METADATA_LIMIT_BYTES = 2048
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_key(key: str, *, allow_reserved: bool = False) -> str:
    """Return `key` if it is a usable object key, else raise InvalidKeyError saying why.

    One set of rules for every store, so a key that works on the local directory works on S3 and back:
    relative, `/`-separated, no empty, `.` or `..` segment, no control characters, at most 1024 UTF-8 bytes.
    """
    if not isinstance(key, str) or not key:
        raise InvalidKeyError(str(key), "keys must be non-empty strings")
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise InvalidKeyError(key[:60] + "...", f"longer than {MAX_KEY_BYTES} bytes")
    if _CONTROL.search(key):
        raise InvalidKeyError(key, "contains a control character")
    if key.startswith("/") or "\\" in key:
        raise InvalidKeyError(key, "must be relative and use '/' as separator")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidKeyError(key, "has an empty, '.' or '..' path segment")
    if not allow_reserved and is_reserved(key):
        raise InvalidKeyError(key, f"the prefix {RESERVED_PREFIX!r} is reserved for gcl-orchestrator")
    return key


def shorten(value: Any, limit: int = 80) -> str:
    """`repr(value)`, cut to `limit` characters with its full size said: messages name a value, never print a
    long one whole."""
    text = repr(value)
    if len(text) <= limit:
        return text
    size = f"{len(value):,} items" if isinstance(value, (list, tuple, dict, set)) else f"{len(text):,} characters"
    return f"{text[:limit]}... ({size})"


def clip(text: str, limit: int = 500) -> str:
    """A message cut to `limit` characters, saying how long it was."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters in all)"


def is_reserved(key: str) -> bool:
    return key.startswith(RESERVED_PREFIX) or key == RESERVED_PREFIX.rstrip("/")


_META_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


def normalize_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """Lower-case metadata names and check that names and values survive an HTTP header.

    Raises ValueError naming the field: values must be printable ASCII without newlines, because that is all
    an `x-amz-meta-*` header carries unchanged on every server, and all of it must fit AWS's 2 KB.
    """
    out: dict[str, str] = {}
    for name, value in (metadata or {}).items():
        lname = str(name).lower()
        if not _META_NAME.match(lname):
            raise ValueError(f"metadata name {name!r} must be lower-case letters, digits, '-' or '_'")
        if not isinstance(value, str):
            raise ValueError(f"metadata {name!r} must be a string, not {type(value).__name__}")
        if not value.isascii() or _CONTROL.search(value):
            raise ValueError(f"metadata {name!r} must be printable ASCII on one line")
        out[lname] = value
    size = sum(len(k) + len(v) for k, v in out.items())
    if size > METADATA_LIMIT_BYTES:
        raise ValueError(f"user metadata is {size} bytes; S3 allows {METADATA_LIMIT_BYTES}")
    return out


def header_text(raw: bytes) -> str:
    """Metadata bytes as text, the same way on every path (an HTTP header read by a HEAD, a base64 value in a
    SeaweedFS event): UTF-8, with anything that is not UTF-8 replaced (so it fails visibly later, never as two
    different strings for one object)."""
    return raw.decode("utf-8", "replace")


def header_value(value: str) -> str:
    """A header value as Python's HTTP client hands it over (each byte as one ISO-8859-1 character), decoded
    like `header_text`. Pure ASCII, what gcl-orchestrator writes, comes back unchanged."""
    if value.isascii():
        return value
    try:
        return header_text(value.encode("latin-1"))
    except UnicodeEncodeError:  # not from an HTTP header after all
        return value


def metadata_get(metadata: Mapping[str, str] | None, name: str) -> str | None:
    """Case-insensitive metadata lookup (servers differ: `X-Amz-Meta-gcl`, `x-amz-meta-gcl`, `gcl`)."""
    if not metadata:
        return None
    name = name.lower()
    value = metadata.get(name)
    if value is not None:
        return value  # named as the stores and gcl-orchestrator name it
    for key, value in metadata.items():
        k = key.lower()
        if k.startswith("x-amz-meta-"):
            k = k[len("x-amz-meta-"):]
        if k == name:
            return value
    return None


# --- versions and runs ------------------------------------------------------------------------------------------


def identity(digest: str | None, gcl: str | None) -> str:
    """What tells two versions of an object apart: its bytes (the digest) and the GCL it carries. The same bytes
    and GCL written again are the same identity, so nothing runs again."""
    return f"{(digest or '')[:32]}:{gcl or ''}"


def run_id(spec: "ComputationSpec", inputs: Iterable[tuple[str, str]]) -> str:
    """The identity of a run: the computation's spec and the identity of every input it is computed from. Two
    attempts of one run share it, so a run commits once."""
    text = spec.fingerprint() + "|" + "|".join(f"{k}={v}" for k, v in sorted(inputs))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:20]


# --- immutable containers --------------------------------------------------------------------------------------


class FrozenDict(dict):
    """A dict that refuses mutation, hashes, and pickles (specs cross process boundaries)."""

    def _readonly(self, *_a: Any, **_k: Any) -> None:
        raise TypeError("this mapping is immutable")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _readonly  # type: ignore[assignment]

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted(self.items(), key=lambda kv: kv[0])))

    def __reduce__(self) -> tuple:
        return (FrozenDict, (dict(self),))

    def __repr__(self) -> str:
        return f"FrozenDict({dict.__repr__(self)})"


def freeze(value: Any) -> Any:
    """Deep-freeze JSON-like data: dicts become FrozenDict, lists tuples."""
    if isinstance(value, (str, int, float, type(None))):  # the common case first: the ABC check costs more
        return value
    if isinstance(value, (dict, abc.Mapping)):
        return FrozenDict({k: freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """The inverse of freeze: plain dicts and lists, for handlers and JSON."""
    if isinstance(value, (str, int, float, type(None))):
        return value
    if isinstance(value, (dict, abc.Mapping)):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value


# --- specs -----------------------------------------------------------------------------------------------------


_NO_PARAMS = FrozenDict()


@dataclass(frozen=True, slots=True, init=False)
class ComputationSpec:
    """One computation as GCL declares it. Built only by `spec.loader`, which validates every field.

    `inputs` are exact keys, whatever form GCL gave them in: what the core waits for. `declared_inputs` keeps
    that form when it named ranges of keys (None when it listed keys only), so that the spec written back to
    metadata, and its fingerprint, stay as compact as it was declared.
    """

    computation: str
    inputs: tuple[str, ...]
    output: str
    handler_type: str
    priority: int = 0
    params: FrozenDict = field(default_factory=FrozenDict)
    retry: FrozenDict | None = None
    timeout_s: float | None = None
    resources: FrozenDict | None = None
    alternatives: tuple[FrozenDict, ...] = ()
    notify: tuple[str, ...] = ()
    version: str | None = None  # the handler's code version, as the user names it
    declared_inputs: tuple[str | FrozenDict, ...] | None = None  # keys and key ranges, as declared

    def __init__(self, computation: str, inputs: tuple[str, ...], output: str, handler_type: str,
                 priority: int = 0, params: FrozenDict = _NO_PARAMS, retry: FrozenDict | None = None,
                 timeout_s: float | None = None, resources: FrozenDict | None = None,
                 alternatives: tuple[FrozenDict, ...] = (), notify: tuple[str, ...] = (),
                 version: str | None = None, declared_inputs: tuple[str | FrozenDict, ...] | None = None):
        # Slots, not an instance dict: a quarter of the memory and faster reads, which the scheduling core feels
        # at 100k computations. Frozen all the same: the fields are set through their slot descriptors (the
        # dataclass default, object.__setattr__ per field, costs twice as much).
        _set_computation(self, computation)
        _set_inputs(self, inputs)
        _set_output(self, output)
        _set_handler_type(self, handler_type)
        _set_priority(self, priority)
        _set_params(self, params)
        _set_retry(self, retry)
        _set_timeout_s(self, timeout_s)
        _set_resources(self, resources)
        _set_alternatives(self, alternatives)
        _set_notify(self, notify)
        _set_version(self, version)
        _set_declared_inputs(self, declared_inputs)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form, omitting fields left at their defaults (compact metadata)."""
        out: dict[str, Any] = {
            "computation": self.computation,
            "handler_type": self.handler_type,
            "inputs": list(self.inputs) if self.declared_inputs is None else thaw(self.declared_inputs),
            "output": self.output,
        }
        if self.priority:
            out["priority"] = self.priority
        if self.params:
            out["params"] = thaw(self.params)
        if self.retry is not None:
            out["retry"] = thaw(self.retry)
        if self.timeout_s is not None:
            out["timeout_s"] = self.timeout_s
        if self.resources is not None:
            out["resources"] = thaw(self.resources)
        if self.alternatives:
            out["alternatives"] = thaw(self.alternatives)
        if self.notify:
            out["notify"] = list(self.notify)
        if self.version is not None:
            out["version"] = self.version
        return out

    def fingerprint(self) -> str:
        """A short hash of everything that makes a run of this computation: a changed spec (a new `version`, other
        params, another handler type) is a new run."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


(_set_computation, _set_inputs, _set_output, _set_handler_type, _set_priority, _set_params, _set_retry,
 _set_timeout_s, _set_resources, _set_alternatives, _set_notify, _set_version, _set_declared_inputs) = (
    vars(ComputationSpec)[f.name].__set__ for f in dataclasses.fields(ComputationSpec))


# --- events from sources and executors (the one queue carries all of these) -------------------------------------
# Events and instructions made once per computation are NamedTuples: as immutable as a frozen dataclass, and four
# times cheaper to build, which the scheduling core's throughput feels. The rarer ones stay dataclasses.


@dataclass(frozen=True)
class ObjectCreated:
    """A source noticed an object at `key`. `metadata` is None when the source could not see it (a HEAD is due).

    `ack`, when given, is called once the runtime has handled the event (a queue message may then be deleted);
    it is not called when the object could not be read, so that the notification comes again.
    """

    key: str
    etag: str | None = None
    metadata: Mapping[str, str] | None = None
    source: str = ""
    ack: Callable[[], None] | None = field(default=None, compare=False, repr=False)


class ComputationSucceeded(NamedTuple):
    """A handler finished and its output is committed. `specs` are the ones it emitted (None: the output was there
    already and `metadata`, its own, says what follows). `metadata` is the output's, as committed."""

    computation: str
    attempt: int
    output_etag: str | None
    specs: tuple[ComputationSpec, ...] | None = ()
    metadata: Mapping[str, str] | None = None
    duration_s: float = 0.0
    subscriber: str | None = None  # handler type to tell when each emitted computation ends (ctx request)
    committed_at: float = 0.0  # wall time at which the output write completed
    requests: int = 0  # store requests the attempt made (where the store counts them)
    gcl_error: str | None = None  # why the GCL of the output found already there was refused
    output_identity: str | None = None  # the committed output's bytes and GCL (model.identity)
    run: str | None = None  # the run the output records (model.run_id)
    output_digest: str | None = None  # the MD5 of the committed output's bytes, where the store says it


class ComputationFailed(NamedTuple):
    computation: str
    attempt: int
    error: str
    permanent: bool = False
    duration_s: float = 0.0
    requests: int = 0
    worker_lost: bool = False  # the process running it died (crash, kill, OOM): not the handler's own failure


@dataclass(frozen=True)
class ObjectRemoved:
    """A source noticed that the object at `key` was deleted. `ack` as for ObjectCreated."""

    key: str
    source: str = ""
    ack: Callable[[], None] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class ComputationBlocked:
    """A running handler waits (ctx.wait_for, a submit handle's result) until `keys` exist. The core answers with
    a `WaitOver` carrying `wait_id` once every key exists, or at once when one of them will never come. Meanwhile
    the attempt's worker slot is lent to the work it waits for; its declared resources stay held."""

    computation: str
    attempt: int
    keys: tuple[str, ...]
    wait_id: int = 0


@dataclass(frozen=True)
class ComputationResumed:
    """A blocked handler stopped waiting by itself (its own time-out) and takes its slot back."""

    computation: str
    attempt: int


@dataclass(frozen=True)
class IncidentReported:
    """Something went wrong that the run survives (a background loop crashed and was restarted, an object that
    cannot be read): logged, and kept in the status for people to see."""

    where: str
    message: str
    key: str | None = None


@dataclass(frozen=True)
class ComponentFailed:
    """A part the run cannot do without (the executor) cannot go on: the run ends, with exit code 3."""

    component: str
    message: str


# --- events the core consumes (the runtime resolves ObjectCreated into ObjectAvailable) -------------------------


class ObjectAvailable(NamedTuple):
    """`key` exists in the store, at version `etag` (the store's stamp; None: not known). `specs` came with it in
    GCL metadata, or None when its metadata was not read because the attempt producing it is running and its
    report will carry them; `gcl_error` says why its GCL was rejected. `identity` (model.identity: its bytes and
    GCL) is what tells a new version from the same one written again; None when not known. `run` is the run an
    output records having been computed by (model.run_id)."""

    key: str
    specs: tuple[ComputationSpec, ...] | None = ()
    gcl_error: str | None = None
    etag: str | None = None
    identity: str | None = None
    run: str | None = None


@dataclass(frozen=True)
class RerunRequested:
    """Someone asked (`gclo rerun`) that `computation` run again, and everything downstream of it too when
    `downstream`; `source` says who. `ack`, when given, is called once the runtime has handed it to the core (the
    request is then deleted: one left by a run that stopped first is taken up by the next)."""

    computation: str
    downstream: bool = False
    source: str = ""
    ack: Callable[[], None] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class CancelRequested:
    """Someone asked (`gclo cancel`, the HTTP API) that `computation` stop: a running attempt is cancelled, and
    the computation fails as cancelled, its dependents upstream-failed. `source` says who. A computation that has
    settled already is left as it is (an output that exists stays the fact). `ack`: as for RerunRequested."""

    computation: str
    source: str = ""
    ack: Callable[[], None] | None = field(default=None, compare=False, repr=False)


class AttemptsRestored(NamedTuple):
    """At a restart, what the journal kept of a computation's attempts before it: how many were made (all
    variants), which alternative it had reached and how many attempts that one made, how many lost their worker,
    the last errors, and when its next attempt is due (wall time; None: at once)."""

    computation: str
    attempts: int
    alternative: int = 0
    variant_attempts: int = 0
    lost_attempts: int = 0
    errors: tuple[str, ...] = ()
    retry_at: float | None = None
    cancelled: bool = False  # it was cancelled: it stays failed, with its last error


class CapacityChanged(NamedTuple):
    """The executor's workers changed (a cluster's workers joined or left): each pool named here now has these
    slots and this capacity (PoolSpec.name picks the pool; its handler types are kept). Pools not named keep
    theirs; no pool is added or removed. Slots may be 0: that pool starts nothing more until they come back, and
    its ready work waits. Work is still refused at registration only by what a pool has offered at most."""

    pools: tuple[PoolSpec, ...]


@dataclass(frozen=True)
class SpecsSubmitted:
    """Specs that arrived without an object of their own (a rules match, a CLI or API submission, a handler's
    `ctx.submit`). `request`, when given, is `(computation, attempt, request_id)` of the handler attempt that
    submitted them: the core answers it with a `SubmitAnswer`."""

    source: str
    specs: tuple[ComputationSpec, ...]
    subscriber: str | None = None
    request: tuple[str, int, int] | None = None


CoreEvent = (ObjectAvailable | ObjectRemoved | SpecsSubmitted | RerunRequested | CancelRequested | ComputationSucceeded
             | ComputationFailed | ComputationBlocked | ComputationResumed)


# --- instructions the core emits -------------------------------------------------------------------------------


class Dispatch(NamedTuple):
    """Run `spec` now in worker pool `pool`. Attempt numbers start at 1 and count every attempt of the
    computation, alternatives included; `spec` is the variant to run (an alternative applied, if any). `lent`:
    it runs on a slot lent by a handler that waits for it, so it must start at once, not queue behind others."""

    spec: ComputationSpec
    attempt: int
    pool: str = "general"
    lent: bool = False
    replaces: str | None = None  # the output's current version, which this run replaces (None: create it)
    inputs: tuple[tuple[str, str], ...] = ()  # (key, identity) of each input as the core knows it now
    run_seq: int = 1  # which run of the computation this is: a newer run's output is never replaced by an older
    # The aged priority the core ordered it by: the GCL priority minus ageing x the wall time it became ready.
    # Higher runs first; only differences mean anything (for an executor that queues work of its own).
    priority: float = 0.0


@dataclass(frozen=True)
class Expedite:
    """Attempt `attempt` of `computation`, dispatched earlier, now runs on a slot lent by a handler that waits
    for it: if it still waits in the executor's queue, start it at once."""

    computation: str
    attempt: int


@dataclass(frozen=True)
class Cancel:
    """End attempt `attempt` of `computation` (a time-out, or its output appeared while it ran); the core has
    already given its slot back."""

    computation: str
    attempt: int
    reason: str


class Completion(NamedTuple):
    """What a completion handler is told: which computation ended, how, after how many attempts, with which
    error, and which variant (the computation itself or an alternative) produced the output."""

    computation: str
    state: "State"
    output: str
    attempts: int
    error: str | None = None
    produced_by: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.state is State.DONE


@dataclass(frozen=True)
class Notify:
    """Tell handler type `handler_type` that a computation ended."""

    handler_type: str
    completion: Completion


@dataclass(frozen=True)
class Deadlock:
    """A deadlock found and resolved: which kind, which computations, and why, in words."""

    kind: str
    computations: tuple[str, ...]
    explanation: str


@dataclass(frozen=True)
class Stalled:
    """Work that waits for inputs nothing registered produces, after the grace period: in service mode it keeps
    waiting (an upload may still come) and is reported, once, instead of being failed."""

    computations: tuple[str, ...]
    explanation: str


@dataclass(frozen=True)
class Reject:
    """Tell the user that a spec from `source` was refused, and why. The core has already recorded it."""

    source: str
    computation: str | None
    reason: str


class Settle(NamedTuple):
    """A computation reached a final state (done, failed, upstream-failed); `detail` says how, empty for a
    plain success. The runtime logs it and publishes a completion event."""

    computation: str
    state: "State"
    detail: str = ""


@dataclass(frozen=True)
class Stale:
    """`computation` runs again, and why: an input has a new version, its output was deleted, a rerun was asked
    for, or its spec changed."""

    computation: str
    reason: str


@dataclass(frozen=True)
class AttemptFailed:
    """Attempt `attempt` of `computation` failed with `error`; `then` says what follows (a retry and its delay,
    the next alternative, or nothing: a Settle follows)."""

    computation: str
    attempt: int
    error: str
    then: str
    retry_in_s: float | None = None


@dataclass(frozen=True)
class ReadGcl:
    """The GCL of `key` was not read when it appeared (the attempt producing it was expected to report it) and
    that attempt ended without doing so: read the object's metadata and report it as ObjectAvailable."""

    key: str


@dataclass(frozen=True)
class KeyOutcome:
    """How a key a handler waited for turned out: produced, or never (its producer failed, was upstream-failed,
    or was rejected), with the producer's name and error."""

    key: str
    computation: str | None
    state: str
    error: str | None = None


@dataclass(frozen=True)
class WaitOver:
    """The answer to a ComputationBlocked: every key exists (`failures` empty), or some never will; `deadlock`
    says why the core ended a wait that could not be satisfied."""

    wait_id: int
    failures: tuple[KeyOutcome, ...] = ()
    deadlock: str | None = None


@dataclass(frozen=True)
class SubmitAnswer:
    """The answer to a handler's submission: per computation, its state once registered, or why it was refused."""

    request_id: int
    accepted: tuple[tuple[str, str], ...]  # (computation, state)
    rejected: tuple[tuple[str, str], ...]  # (computation, reason)


@dataclass(frozen=True)
class Reply:
    """Deliver `message` (a WaitOver or a SubmitAnswer) to attempt `attempt` of `computation`, which is running."""

    computation: str
    attempt: int
    message: WaitOver | SubmitAnswer


Instruction = (Dispatch | Reject | Settle | Cancel | Notify | Deadlock | Stalled | AttemptFailed | ReadGcl
               | Reply | Expedite | Stale)


class State(str, enum.Enum):
    WAITING = "waiting"
    READY = "ready"
    RUNNING = "running"
    RETRYING = "retrying"  # an attempt failed; the next one is due at retry_at
    DONE = "done"
    FAILED = "failed"
    UPSTREAM_FAILED = "upstream-failed"  # an input will never come because its producer failed
    RETIRED = "retired"  # no object declares it any more; its output, if any, is kept

    def __str__(self) -> str:
        return self.value


def priority_value(value: int | str) -> int:
    """Named or integer priority to its integer; higher runs first."""
    if isinstance(value, str):
        return PRIORITY_LEVELS[value]
    return int(value)


def unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


# --- scheduling policies ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """How often an attempt is repeated and how long to wait in between: min(max_delay, initial * multiplier^(n-1))
    plus a random jitter of up to jitter_s, after the n-th failure."""

    max_attempts: int = 1
    initial_delay_s: float = 1.0
    max_delay_s: float = 60.0
    multiplier: float = 2.0
    jitter_s: float = 0.0

    @classmethod
    def from_spec(cls, retry: Mapping[str, Any]) -> "RetryPolicy":
        return cls(**{k: retry[k] for k in ("max_attempts", "initial_delay_s", "max_delay_s", "multiplier",
                                            "jitter_s") if k in retry})

    def delay(self, failures: int, rng: random.Random) -> float:
        base = min(self.max_delay_s, self.initial_delay_s * self.multiplier ** max(0, failures - 1))
        return base + (rng.uniform(0, self.jitter_s) if self.jitter_s else 0.0)


@dataclass(frozen=True)
class PoolSpec:
    """A pool of worker slots. `handler_types` run only here (affinity); a pool without them is the general pool
    for every other type. `capacity` bounds the resources its running computations declare; `cpu` defaults to
    the number of slots and any resource not named has none."""

    name: str
    slots: int
    capacity: FrozenDict = field(default_factory=FrozenDict)
    handler_types: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if "cpu" not in self.capacity:
            object.__setattr__(self, "capacity", FrozenDict({"cpu": float(self.slots), **self.capacity}))


@functools.lru_cache(maxsize=4096)
def variant(spec: ComputationSpec, alternative: int) -> ComputationSpec:
    """The spec as alternative `alternative` runs it (0: the spec itself): its handler_type and params replace
    the spec's. The computation keeps its name (it is one node of the graph, whichever variant produces its
    output); an alternative's own `computation` field is the label of that variant, see `variant_label`."""
    if alternative == 0:
        return spec
    override = spec.alternatives[alternative - 1]
    return dataclasses.replace(spec, **{k: override[k] for k in ("handler_type", "params") if k in override})


def variant_label(spec: ComputationSpec, alternative: int) -> str:
    if alternative == 0:
        return spec.computation
    return str(spec.alternatives[alternative - 1].get("computation") or f"{spec.computation}#alternative{alternative}")
