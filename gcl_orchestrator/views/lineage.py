"""Lineage: what an object was computed from, read from the store alone. Every output records its run and the
identity (bytes and GCL) of each input as it read it; following those records from a key gives the tree of what
it came from, and comparing each recorded identity with the object there now says whether the part is current."""
from __future__ import annotations

from ..errors import ObjectNotFound
from ..gcl.metadata import gcl_fingerprint, read_lineage
from ..interfaces import ObjectStore
from ..model import identity

MAX_DEPTH = 24
MAX_LISTED = 100  # inputs followed per object: a join over 100,000 parts shows its first hundred and the count


def _short(ident: str) -> str:
    digest, _, gcl = ident.partition(":")
    return digest[:10] + (f"+gcl {gcl[:6]}" if gcl else "")


def lineage_lines(store: ObjectStore, key: str, max_depth: int = MAX_DEPTH) -> list[str]:
    """The tree of what `key` was computed from, one line per object, indented by depth."""
    lines: list[str] = []
    shown: set[str] = set()  # objects whose inputs are listed already: a shared input is expanded once

    def read_sidecar(ref: str) -> bytes | None:
        try:
            return store.get(ref).body
        except ObjectNotFound:
            return None

    def walk(key: str, recorded: str | None, depth: int, path: frozenset[str]) -> None:
        pad = "  " * depth
        try:
            info = store.head(key)
        except ObjectNotFound:
            lines.append(f"{pad}{key}: deleted since" + (f" (was {_short(recorded)})" if recorded else ""))
            return
        now = identity(info.digest, gcl_fingerprint(info.metadata))
        run, inputs = read_lineage(info.metadata, read_sidecar)
        if recorded is None:
            state = ""
        elif recorded == now:
            state = "  current"
        else:
            state = f"  CHANGED since: computed from {_short(recorded)}"
        made = f"  (run {run.split(':', 1)[0]})" if run else ("" if inputs else "  (not computed here)")
        lines.append(f"{pad}{key} @ {_short(now)}{made}{state}")
        if inputs is None and run is not None:
            lines.append(f"{pad}  (its list of inputs is missing)")
        if not inputs:
            return
        if key in shown:
            lines.append(f"{pad}  ... (its {len(inputs)} inputs: as above)")
            return
        shown.add(key)
        if depth >= max_depth or key in path:
            lines.append(f"{pad}  ... ({len(inputs)} inputs, not followed further)")
            return
        for input_key, input_identity in inputs[:MAX_LISTED]:
            walk(input_key, input_identity, depth + 1, path | {key})
        if len(inputs) > MAX_LISTED:
            lines.append(f"{pad}  ... and {len(inputs) - MAX_LISTED:,} more inputs (gclo lineage KEY for one)")

    walk(key, None, 0, frozenset())
    return lines
