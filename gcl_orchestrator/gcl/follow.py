"""What follows an object: the one decision, made the same way for an object noticed live and for one found
at restart. The GCL its metadata carries (inline, or in the sidecar it names) comes first; an object without
GCL gets the rules' computations for its key, unless a registered computation produces that key (rules are for
files people drop, never for outputs)."""
from __future__ import annotations

from typing import Callable, Mapping

from ..errors import GclError, SpecError
from ..model import METADATA_LIMIT_BYTES, RESERVED_PREFIX, ComputationSpec
from .loader import load_gcl
from .metadata import read_gcl_fields, valid_sidecar_key
from .rules import RuleSet

Specs = tuple[ComputationSpec, ...]


def what_follows(key: str, metadata: Mapping[str, str] | None, *, rules: RuleSet, produced: bool,
                 read_sidecar: Callable[[str], bytes | None]) -> tuple[Specs, str | None]:
    """The specs the object at `key` brings, and why its GCL was refused (None if it was not).

    `produced`: a registered computation produces `key`. `read_sidecar(ref)` returns the sidecar's bytes, or
    None when there is no such object; a storage error it raises is reported as the reason.
    """
    fields = read_gcl_fields(metadata)
    try:
        if fields.text is not None:
            size = len(fields.text.encode("utf-8", "replace"))
            if size > METADATA_LIMIT_BYTES:
                return (), (f"the gcl metadata field is {size:,} bytes; inline GCL is limited to "
                            f"{METADATA_LIMIT_BYTES:,} (S3's user-metadata limit): put larger GCL in a sidecar "
                            "(gclo put does)")
            return load_gcl(fields.text, source=key), None
        if fields.ref is not None:
            if not valid_sidecar_key(fields.ref):
                return (), f"gcl-ref {fields.ref[:200]!r} does not point into {RESERVED_PREFIX}gcl/"
            body = read_sidecar(fields.ref)
            if body is None:
                return (), f"gcl-ref points to {fields.ref!r}, which does not exist"
            return load_gcl(body, source=key, sidecar=True), None
        if produced:
            return (), None
        return rules.specs_for(key), None
    except SpecError as exc:
        return (), exc.one_line()
    except GclError as exc:
        return (), str(exc)
