"""The status document: what the orchestrator knows, written to the store so that `gclo status` works from any
process or machine, and rendered as a table for people.

In the store it is a small summary at `.gclo/state/status.json` (counts, the orchestrator, rejections, deadlocks,
incidents) and, for each state that has computations, parts of its own with them
(`.gclo/state/computations/STATE-N.json.gz`, gzip'd JSON, up to CHUNK computations each), named by the summary. A
reader that shows one state reads the summary and that state's parts alone: the failed computations of a
million-computation graph are one small object. Parts are written before the summary that names them, so a part
may be one write newer than the summary.

The orchestrator keeps the parts up to date from the core's state changes (`StatusParts`): a write rebuilds and
rewrites only the parts whose members changed state since the last one (a computation that settles joins the
newest part of its state), and the parts of waiting computations, whose missing inputs shrink without a change of
state. So a write costs what changed, not the size of the graph: on a million-computation run the done
computations that finished long ago are never encoded again.
"""
from __future__ import annotations

import gzip
import heapq
import time
from typing import Any, Iterable, Mapping

from ..core import ComputationRecord, Scheduler
from .. import jsonbytes
from ..errors import ObjectNotFound, StorageError
from ..interfaces import ObjectStore
from ..model import RESERVED_PREFIX, State

STATUS_KEY = RESERVED_PREFIX + "state/status.json"
PARTS_PREFIX = RESERVED_PREFIX + "state/computations/"
FORMAT = 3  # 1: the computations inside the summary; 2: one part per state (both still read)
CHUNK = 10_000  # computations per part
SHOWN_MISSING = 100  # missing inputs listed per computation; a join waiting for 100,000 parts says how many
# The order a reader gets the states in, as the graph flows: what has settled, what runs, what waits. So a cut
# (`gclo graph --limit N`) shows the graph from its roots, whatever order the parts were written in.
READING_ORDER = {s.value: rank for rank, s in enumerate((
    State.DONE, State.FAILED, State.UPSTREAM_FAILED, State.RETIRED, State.RUNNING, State.RETRYING, State.READY,
    State.WAITING))}


def part_key(state: str) -> str:
    return f"{PARTS_PREFIX}{state}.json.gz"


def computation_item(rec: ComputationRecord) -> dict[str, Any]:
    """One computation as the status document, the graph export and the HTTP API show it."""
    item: dict[str, Any] = {
        "computation": rec.name,
        "state": rec.state.value,
        "handler_type": rec.spec.handler_type,
        "priority": rec.spec.priority,
        "inputs": list(rec.spec.inputs),
        "output": rec.spec.output,
        "source": rec.source,
        "attempts": rec.attempts,
    }
    if rec.pool:
        item["pool"] = rec.pool
    if rec.missing:
        missing = rec.missing
        if len(missing) > SHOWN_MISSING:
            item["missing_count"] = len(missing)
            item["missing"] = heapq.nsmallest(SHOWN_MISSING, missing)
        else:
            item["missing"] = sorted(missing)
    if rec.stalled:
        item["stalled"] = True
    if rec.cancelled:
        item["cancelled"] = True
    if rec.last_error:
        item["last_error"] = rec.last_error
    if len(rec.errors) > 1 or (rec.errors and rec.state is State.DONE):
        item["errors"] = list(rec.errors[-10:])
    if rec.alternative:
        item["alternative"] = rec.alternative
    if rec.produced_by and rec.produced_by != rec.name:
        item["produced_by"] = rec.produced_by
    if rec.retry_at is not None and rec.state is State.RETRYING:
        item["retry_at"] = rec.retry_at
    if rec.note:
        item["note"] = rec.note
    if rec.started_at is not None and rec.finished_at is not None:
        item["duration_s"] = round(rec.finished_at - rec.started_at, 4)
    return item


def build_status(core: Scheduler, orchestrator: dict[str, Any], incidents: Iterable[dict[str, Any]],
                 now: float) -> dict[str, Any]:
    """A full snapshot (a scan of the graph: taken on an interval, never per event)."""
    return {**_summary(core, orchestrator, incidents, now),
            "computations": [computation_item(rec) for rec in core.records()]}


class StatusParts:
    """Which part each computation is in, kept from the core's state changes, so that a status write rebuilds
    only the parts that changed (see the module). Runs on the loop thread; holds names and part numbers only
    (the items are built from the core's records when a part is written)."""

    def __init__(self) -> None:
        self._part_of: dict[str, int] = {}  # computation -> part number
        self._members: list[set[str]] = []  # part number -> its computations
        self._state: list[str] = []  # part number -> the state its computations are in
        self._newest: dict[str, int] = {}  # state -> the part that takes its newcomers
        self._dirty: set[int] = set()

    def changed(self, names: Iterable[str], core: Scheduler) -> None:
        """Computations whose state changed (the core's `changes`, or every one at first)."""
        for name in names:
            rec = core.record(name)
            state = rec.state.value if rec is not None else None
            part = self._part_of.get(name)
            if part is not None:
                self._dirty.add(part)
                if self._state[part] == state:
                    continue  # through another state and back: its item changed, its part did not
                self._members[part].discard(name)
                del self._part_of[name]
            if state is not None:
                part = self._part_for(state)
                self._members[part].add(name)
                self._part_of[name] = part
                self._dirty.add(part)

    def _part_for(self, state: str) -> int:
        part = self._newest.get(state)
        if part is None or len(self._members[part]) >= CHUNK:
            part = len(self._members)
            self._members.append(set())
            self._state.append(state)
            self._newest[state] = part
        return part

    def key(self, part: int) -> str:
        return f"{PARTS_PREFIX}{self._state[part]}-{part:05d}.json.gz"

    def document(self, core: Scheduler, orchestrator: dict[str, Any], incidents: Iterable[dict[str, Any]],
                 now: float) -> dict[str, Any]:
        """The summary, with the items of the parts due to be written (`part_items`, by key)."""
        waiting = State.WAITING.value
        due = self._dirty | {p for p, state in enumerate(self._state) if state == waiting and self._members[p]}
        self._dirty = set()
        records = core.record
        part_items = {}
        for part in sorted(due):
            items = [computation_item(rec) for rec in map(records, sorted(self._members[part])) if rec is not None]
            if items or part == self._newest.get(self._state[part]):
                part_items[self.key(part)] = items
        parts: dict[str, dict[str, Any]] = {}
        for part, members in enumerate(self._members):
            if members:
                entry = parts.setdefault(self._state[part], {"keys": [], "count": 0})
                entry["keys"].append(self.key(part))
                entry["count"] += len(members)
        return {**_summary(core, orchestrator, incidents, now), "parts": parts, "part_items": part_items}


def _summary(core: Scheduler, orchestrator: dict[str, Any], incidents: Iterable[dict[str, Any]],
             now: float) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "updated_at": now,
        "orchestrator": orchestrator,
        "counts": {s.value: n for s, n in core.counts().items()},
        "rejected": [{"source": r.source, "computation": r.computation, "reason": r.reason, "at": r.at}
                     for r in core.rejections],
        "deadlocks": [{"kind": d.kind, "computations": list(d.computations), "explanation": d.explanation}
                      for d in core.deadlocks],
        "incidents": list(incidents),
    }


def write_status(store: ObjectStore, status: Mapping[str, Any]) -> None:
    """The parts due (`part_items`, from StatusParts; or a whole document's `computations`, one part per
    state), then the summary naming them (see the module)."""
    part_items: dict[str, list[dict[str, Any]]] = dict(status.get("part_items") or {})
    parts = status.get("parts")
    if "computations" in status:  # a whole document (build_status)
        by_state: dict[str, list[dict[str, Any]]] = {}
        for item in status["computations"]:
            by_state.setdefault(item["state"], []).append(item)
        part_items = {part_key(state): items for state, items in by_state.items()}
        parts = {state: {"keys": [part_key(state)], "count": len(items)} for state, items in by_state.items()}
    for key, items in part_items.items():
        body = gzip.compress(jsonbytes.dumps(items), compresslevel=1)
        store.put(key, body, {"content-type": "application/gzip"})
    summary = {k: v for k, v in status.items() if k not in ("computations", "part_items")}
    summary["parts"] = parts or {}
    store.put(STATUS_KEY, jsonbytes.dumps(summary), {"content-type": "application/json"})


def read_status(store: ObjectStore, states: Iterable[str] | None = None) -> dict[str, Any] | None:
    """The last status written to `store`, with the computations of `states` (None: all), or None when no
    orchestrator has run on it. Reads the summary and the parts of those states only."""
    try:
        summary = jsonbytes.loads(store.get(STATUS_KEY).body)
    except ObjectNotFound:
        return None
    except ValueError as exc:
        raise StorageError(f"{STATUS_KEY} in {store.describe()} is not valid JSON ({exc})") from None
    wanted = None if states is None else set(states)
    if "computations" in summary:  # format 1
        if wanted is not None:
            summary["computations"] = [c for c in summary["computations"] if c.get("state") in wanted]
        return summary
    computations: list[dict[str, Any]] = []
    parts = summary.pop("parts", {})
    for state in sorted(parts, key=lambda s: READING_ORDER.get(s, len(READING_ORDER))):
        part = parts[state]
        if wanted is not None and state not in wanted:
            continue
        for key in part.get("keys") or [part["key"]]:  # format 2: one key
            try:
                computations.extend(jsonbytes.loads(gzip.decompress(store.get(key).body)))
            except ObjectNotFound:
                continue  # written by an older orchestrator that kept no parts; the summary's counts still say
            except (OSError, ValueError) as exc:
                raise StorageError(f"{key} in {store.describe()} is not gzip'd JSON ({exc})") from None
    summary["computations"] = computations
    return summary


def _age(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f}s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f}min ago"
    return f"{seconds / 3600:.1f}h ago"


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def render_status(status: dict[str, Any], now: float | None = None, *, state_filter: str | None = None) -> str:
    now = time.time() if now is None else now
    orch = status.get("orchestrator", {})
    lines = []
    updated = status.get("updated_at", now)
    lines.append(f"orchestrator: {orch.get('state', '?')} (pid {orch.get('pid', '?')} on {orch.get('host', '?')}),"
                 f" status written {_age(max(0.0, now - updated))}")
    counts = status.get("counts", {})
    total = sum(counts.values())
    lines.append(f"computations: {total} — " + ", ".join(f"{counts.get(s.value, 0)} {s.value}" for s in State))
    rows = [c for c in status.get("computations", []) if state_filter in (None, c["state"])]
    if rows:
        name_w = min(48, max(len("COMPUTATION"), *(len(c["computation"]) for c in rows)))
        type_w = min(24, max(len("HANDLER"), *(len(c["handler_type"]) for c in rows)))
        lines.append("")
        lines.append(f"{'COMPUTATION':<{name_w}}  {'STATE':<15}  {'HANDLER':<{type_w}}  {'TRIES':>5}  DETAIL")
        order = {s.value: i for i, s in enumerate([State.FAILED, State.UPSTREAM_FAILED, State.RUNNING,
                                                   State.RETRYING, State.READY, State.WAITING, State.DONE,
                                                   State.RETIRED])}
        for c in sorted(rows, key=lambda c: (order.get(c["state"], 9), c["computation"])):
            if c.get("produced_by") and c["state"] == State.DONE.value:
                detail = f"-> {c['output']} by alternative {c['produced_by']!r}"
            elif c.get("retry_at") and c["state"] == State.RETRYING.value:
                detail = f"retry in {max(0.0, c['retry_at'] - now):.1f}s after: {c.get('last_error', '')}"
            elif c.get("last_error"):
                detail = "error: " + c["last_error"]
            elif c.get("missing"):
                count = c.get("missing_count", len(c["missing"]))
                what = ", ".join(c["missing"][:5]) if count <= 5 else (
                    f"{count:,} inputs: {', '.join(c['missing'][:3])}, ...")  # the count first: the line is clipped
                detail = ("stalled, " if c.get("stalled") else "") + "waiting for " + what
            elif c.get("note"):
                detail = c["note"]
            else:
                detail = "-> " + c["output"]
            lines.append(f"{_clip(c['computation'], name_w):<{name_w}}  {c['state']:<15}  "
                         f"{_clip(c['handler_type'], type_w):<{type_w}}  {c['attempts']:>5}  {_clip(detail, 100)}")
    rejected = status.get("rejected", [])
    if rejected and state_filter is None:
        lines.append("")
        lines.append(f"rejected GCL ({len(rejected)}):")
        for r in rejected:
            what = f" computation {r['computation']!r}" if r.get("computation") else ""
            lines.append(f"  from {r['source']!r}{what}: {_clip(r['reason'], 300)}")
    deadlocks = status.get("deadlocks", [])
    if deadlocks and state_filter is None:
        lines.append("")
        lines.append(f"deadlocks found and resolved ({len(deadlocks)}):")
        for d in deadlocks:
            lines.append(f"  {d['kind']}: {_clip(d['explanation'], 400)}")
    incidents = status.get("incidents", [])
    if incidents and state_filter is None:
        lines.append("")
        lines.append(f"incidents ({len(incidents)}, newest last):")
        for i in incidents[-20:]:
            lines.append(f"  {time.strftime('%H:%M:%S', time.localtime(i['at']))} {i.get('key') or '-'}: "
                         f"{_clip(i['message'], 300)}")
    return "\n".join(lines)
