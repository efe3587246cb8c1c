"""GCL carried in object metadata: the `gcl` field (compact JSON) or, when too large or not ASCII, a sidecar
object under `.gclo/gcl/` named by its content hash and referenced from the `gcl-ref` field.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Mapping, Sequence

from ..interfaces import ObjectStore
from ..model import META_GCL, META_GCL_REF, METADATA_LIMIT_BYTES, RESERVED_PREFIX, ComputationSpec, metadata_get
from .loader import MAX_EMIT_LIMIT, MAX_SIDECAR_BYTES

SIDECAR_PREFIX = RESERVED_PREFIX + "gcl/"
RUNS_PREFIX = RESERVED_PREFIX + "runs/"
META_RUN = "gcl-run"  # the run an output was computed by (model.run_id)
META_INPUTS = "gcl-inputs"  # what it was computed from: [[key, identity], ...], compact JSON
META_INPUTS_REF = "gcl-inputs-ref"  # the same, in a sidecar under .gclo/runs/, when it does not fit
INLINE_INPUTS_BYTES = 1024  # lineage kept in metadata up to this size, beside the GCL's own share of 2 KB


@dataclass(frozen=True)
class EncodedGcl:
    """Metadata fields to write, and the sidecar object (key, body) to write first when there is one."""

    metadata: dict[str, str]
    sidecar_key: str | None = None
    sidecar_body: bytes | None = None

    def write_sidecar(self, store: ObjectStore) -> None:
        """Write the sidecar, if there is one. Call it before writing the object that carries `metadata`, so
        that a `gcl-ref` never points at nothing. Named by its content hash: writing it twice is harmless."""
        if self.sidecar_key is not None:
            store.put(self.sidecar_key, self.sidecar_body or b"")


def specs_to_text(specs: Sequence[ComputationSpec]) -> str:
    data = [s.to_dict() for s in specs]
    return json.dumps(data[0] if len(data) == 1 else data, separators=(",", ":"), ensure_ascii=False,
                      sort_keys=True)


def metadata_size(metadata: Mapping[str, str]) -> int:
    return sum(len(k.encode()) + len(v.encode()) for k, v in metadata.items())


def encode_gcl(specs: Sequence[ComputationSpec], other: Mapping[str, str] | None = None,
               limit: int = METADATA_LIMIT_BYTES) -> EncodedGcl:
    """Metadata carrying `specs` next to `other` user metadata, inline when it fits, else via a sidecar.
    Raises ValueError when even the sidecar reference does not fit beside `other`, or when the sidecar would be
    beyond what is read back (MAX_EMIT_LIMIT specs, MAX_SIDECAR_BYTES): what cannot be recovered at restart is
    not written."""
    other = dict(other or {})
    if not specs:
        return EncodedGcl(other)
    if len(specs) > MAX_EMIT_LIMIT:
        raise ValueError(f"{len(specs):,} computations in one GCL; at most {MAX_EMIT_LIMIT:,} can be carried")
    text = specs_to_text(specs)
    inline = {**other, META_GCL: text}
    if text.isascii() and metadata_size(inline) <= limit:
        return EncodedGcl(inline)
    body = text.encode("utf-8")
    if len(body) > MAX_SIDECAR_BYTES:
        raise ValueError(f"the GCL is {len(body):,} bytes; a sidecar holds at most {MAX_SIDECAR_BYTES:,}")
    key = SIDECAR_PREFIX + hashlib.sha256(body).hexdigest() + ".json"
    with_ref = {**other, META_GCL_REF: key}
    if metadata_size(with_ref) > limit:
        raise ValueError(f"user metadata is {metadata_size(other)} bytes before any GCL; with the GCL reference it "
                         f"exceeds the {limit}-byte limit")
    return EncodedGcl(with_ref, key, body)


def gcl_fingerprint(metadata: Mapping[str, str] | None) -> str:
    """A short hash of the GCL an object carries (its `gcl` or `gcl-ref` field), "" when it carries none: the
    GCL half of an object's identity (model.identity)."""
    fields = read_gcl_fields(metadata)
    value = fields.text if fields.text is not None else fields.ref
    if value is None:
        return ""
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:12]


@dataclass(frozen=True)
class Lineage:
    """What an output records of its run: metadata fields, and a sidecar (key, body) when the list of inputs is
    too long for metadata."""

    metadata: dict[str, str]
    sidecar_key: str | None = None
    sidecar_body: bytes | None = None

    def write_sidecar(self, store: ObjectStore) -> None:
        if self.sidecar_key is not None:
            store.put(self.sidecar_key, self.sidecar_body or b"")


def encode_lineage(run: str, inputs: Sequence[tuple[str, str]]) -> Lineage:
    """The run id always inline (restarts compare it); the inputs inline when short, else in a sidecar named by
    its content."""
    text = json.dumps([list(pair) for pair in inputs], separators=(",", ":"), ensure_ascii=True)
    if len(text) <= INLINE_INPUTS_BYTES:
        return Lineage({META_RUN: run, META_INPUTS: text})
    body = text.encode()
    key = RUNS_PREFIX + hashlib.sha256(body).hexdigest() + ".json"
    return Lineage({META_RUN: run, META_INPUTS_REF: key}, key, body)


def read_lineage(metadata: Mapping[str, str] | None, read_sidecar=None) -> tuple[str | None, list[tuple[str, str]] | None]:
    """(run id, inputs) an object's metadata records; inputs None when not recorded (or its sidecar is gone)."""
    run = metadata_get(metadata, META_RUN)
    text = metadata_get(metadata, META_INPUTS)
    ref = metadata_get(metadata, META_INPUTS_REF)
    if text is None and ref is not None and read_sidecar is not None and ref.startswith(RUNS_PREFIX):
        body = read_sidecar(ref)
        text = body.decode("utf-8", "replace") if body is not None else None
    if text is None:
        return run, None
    try:
        pairs = json.loads(text)
        return run, [(str(k), str(v)) for k, v in pairs]
    except (ValueError, TypeError):
        return run, None


@dataclass(frozen=True)
class GclReference:
    """What an object's metadata says about its GCL: inline text, a sidecar key, or neither."""

    text: str | None = None
    ref: str | None = None

    @property
    def present(self) -> bool:
        return self.text is not None or self.ref is not None


def read_gcl_fields(metadata: Mapping[str, str] | None) -> GclReference:
    """Find the GCL fields in metadata, whatever case the server gave the names."""
    return GclReference(metadata_get(metadata, META_GCL), metadata_get(metadata, META_GCL_REF))


def valid_sidecar_key(ref: str) -> bool:
    """A `gcl-ref` may only point into the sidecar area: metadata must not make us read arbitrary keys."""
    name = ref[len(SIDECAR_PREFIX):] if ref.startswith(SIDECAR_PREFIX) else ""
    return bool(name) and "/" not in name and name.endswith(".json") and ".." not in name
