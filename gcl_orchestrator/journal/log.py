"""The journal: what the orchestrator learned of each object (its version, the digest of its bytes, its
metadata, which carries the GCL it declared), so that a restart needs one listing of the store and the metadata
of only the objects that changed while nothing ran.

Shape, for this writer and for a second reader (a standby orchestrator, `gclo status` of a later release):

- `.gclo/journal/seg/SEQ.jsonl.gz`: segment SEQ (12 digits), one JSON object a line: first a header
  `{"journal": 1, "seq": SEQ, "writer": ..., "at": ...}`, then records, `{"k": KEY, "e": ETAG, "d": DIGEST,
  "m": METADATA}` (the object as seen), `{"k": KEY, "t": 1}` (the completion of the computation that wrote it,
  in that version, was told: a restart does not tell it again), `{"k": KEY, "x": 1}` (it is gone),
  `{"c": COMPUTATION, "a": [ATTEMPTS, ALTERNATIVE, VARIANT_ATTEMPTS, LOST, ERRORS, RETRY_AT(, 1)]}` (its
  attempts so far, after one failed; a seventh item, 1, when it was cancelled) or `{"c": COMPUTATION, "x": 1}` (it is done: its attempts no longer matter). Segments are written
  create-if-absent, so two writers can never both write segment SEQ: the second learns that another orchestrator
  writes this journal (JournalConflict) instead of interleaving with it.
- `.gclo/journal/snap/SEQ.json.gz`: a snapshot, every object known once segments up to SEQ are applied
  (`{"journal": 1, "seq": SEQ, "objects": {KEY: [ETAG, DIGEST, METADATA, TOLD]}, "attempts": {COMPUTATION:
  [...]}}`). Once it is written, the segments it
  covers and older snapshots are deleted; a reader that finds a listed segment gone reads again from the newest
  snapshot.

A reader applies the newest snapshot, then every segment after it in order; later records win. The journal is a
cache of what the objects themselves say: lost or damaged, it is ignored (with a warning) and the graph is
rebuilt from the objects (`gclo run --rebuild` does that on purpose).
"""
from __future__ import annotations

import gzip
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from .. import jsonbytes
from ..errors import GclError, ObjectAlreadyExists, ObjectNotFound
from ..interfaces import ObjectStore
from ..model import RESERVED_PREFIX

log = logging.getLogger("gclo")
JOURNAL_PREFIX = RESERVED_PREFIX + "journal/"
SEGMENTS = JOURNAL_PREFIX + "seg/"
SNAPSHOTS = JOURNAL_PREFIX + "snap/"
FORMAT = 1
COMPACT_EVERY = 64  # segments after which the journal is compacted into a snapshot, once they also hold
#                     at least half as many records as the snapshot has objects (so a snapshot of a million
#                     objects is not rewritten every minute)
MAX_SEGMENTS = 1_000  # ...and in any case once this many segments follow the snapshot (a restart reads them all)
MAX_RECORDS_PER_SEGMENT = 50_000
MAX_METADATA_CHARS = 8_192  # metadata this long is far beyond S3's 2 KB: not journaled, a restart reads the object


class JournalConflict(GclError):
    """Another writer wrote the segment this one was about to write."""

    def __init__(self, seq: int, writer: str):
        super().__init__(f"journal segment {seq} in {SEGMENTS} was written by another orchestrator ({writer}); "
                         "only one orchestrator may run on a store")
        self.seq = seq


@dataclass(frozen=True, slots=True)
class Known:
    """An object as the journal knows it."""

    etag: str
    digest: str | None
    metadata: Mapping[str, str]
    told: bool = False  # the completion of the computation that wrote this version was told


@dataclass
class Loaded:
    objects: dict[str, Known]
    attempts: dict[str, list[Any]]  # computation -> [attempts, alternative, variant attempts, lost, errors, retry at]
    next_seq: int  # the first segment number not yet written
    snapshot_seq: int  # the segment the newest snapshot covers (0: none)
    segments: int  # segments read after the snapshot
    requests: int  # reads the load took (listing pages not counted)
    records: int = 0  # records in those segments


def _segment_key(seq: int) -> str:
    return f"{SEGMENTS}{seq:012d}.jsonl.gz"


def _snapshot_key(seq: int) -> str:
    return f"{SNAPSHOTS}{seq:012d}.json.gz"


def _seq_of(key: str, prefix: str) -> int | None:
    digits = key[len(prefix):].split(".", 1)[0]
    return int(digits) if digits.isdigit() else None


def load_journal(store: ObjectStore, attempts: int = 3) -> Loaded:
    """Read the journal: the newest snapshot and the segments after it. A journal that cannot be read is
    reported and treated as empty (the objects are read instead). Raises only on a store outage."""
    for _ in range(attempts):
        try:
            return _load_once(store)
        except ObjectNotFound:
            continue  # compacted while we read: read again from the new snapshot
        except GclError:
            raise  # the store is not answering: not the journal's fault
        except Exception as exc:  # damage of any kind (bad gzip, zlib, JSON, shapes): the journal is a cache
            log.warning("journal in %s cannot be read (%s: %s); reading the objects instead",
                        store.describe(), type(exc).__name__, str(exc)[:200])
            return Loaded({}, {}, _next_free(store), 0, 0, 0)
    log.warning("journal in %s kept changing while it was read; reading the objects instead", store.describe())
    return Loaded({}, {}, _next_free(store), 0, 0, 0)


def _next_free(store: ObjectStore) -> int:
    seqs = [_seq_of(i.key, SEGMENTS) for i in store.list(SEGMENTS)]
    snaps = [_seq_of(i.key, SNAPSHOTS) for i in store.list(SNAPSHOTS)]
    return max([s for s in seqs + snaps if s is not None], default=0) + 1


def _load_once(store: ObjectStore) -> Loaded:
    snapshots = sorted(s for s in (_seq_of(i.key, SNAPSHOTS) for i in store.list(SNAPSHOTS)) if s is not None)
    segments = sorted(s for s in (_seq_of(i.key, SEGMENTS) for i in store.list(SEGMENTS)) if s is not None)
    objects: dict[str, Known] = {}
    attempts: dict[str, list[Any]] = {}
    snapshot_seq = 0
    requests = 0
    if snapshots:
        snapshot_seq = snapshots[-1]
        doc = jsonbytes.loads(gzip.decompress(store.get(_snapshot_key(snapshot_seq)).body))
        requests += 1
        _check_format(doc, _snapshot_key(snapshot_seq))
        for key, (etag, digest, metadata, *told) in doc["objects"].items():
            objects[key] = Known(etag, digest, metadata, bool(told and told[0]))
        attempts.update(doc.get("attempts", {}))
    after = [s for s in segments if s > snapshot_seq]
    records = 0
    for seq in after:
        body = store.get(_segment_key(seq)).body
        requests += 1
        recs = list(_records(body, _segment_key(seq)))
        records += len(recs)
        apply_records(objects, recs, attempts)
    next_seq = max([snapshot_seq] + segments) + 1
    return Loaded(objects, attempts, next_seq, snapshot_seq, len(after), requests, records)


def _check_format(header: Any, key: str) -> None:
    if not isinstance(header, dict):
        raise ValueError(f"{key} does not start with a journal header")
    if header.get("journal") != FORMAT:
        raise ValueError(f"{key} is journal format {header.get('journal')!r}, this release reads {FORMAT}")


def _records(body: bytes, key: str) -> Iterable[Mapping[str, Any]]:
    lines = gzip.decompress(body).splitlines()
    if not lines:
        raise ValueError(f"{key} is empty")
    _check_format(jsonbytes.loads(lines[0]), key)
    for line in lines[1:]:
        if line:
            yield jsonbytes.loads(line)


def apply_records(objects: dict[str, Known], records: Iterable[Mapping[str, Any]],
                  attempts: dict[str, list[Any]]) -> None:
    for rec in records:
        if not isinstance(rec, dict):
            raise ValueError(f"a journal record is {type(rec).__name__}, not an object")
        if "c" in rec:
            if rec.get("x"):
                attempts.pop(rec["c"], None)
            else:
                attempts[rec["c"]] = list(rec["a"])
        elif rec.get("x"):
            objects.pop(rec["k"], None)
        elif rec.get("t"):
            known = objects.get(rec["k"])
            if known is not None:
                objects[rec["k"]] = Known(known.etag, known.digest, known.metadata, True)
        else:
            objects[rec["k"]] = Known(rec["e"], rec.get("d"), rec["m"])


class Journal:
    """Collects records as the orchestrator learns them (any thread) and writes them as the next segment at each
    `flush()` (the orchestrator calls it off its loop, from a thread of its own); compacts once COMPACT_EVERY
    segments hold at least half as many records as the snapshot has objects, or after MAX_SEGMENTS. A store outage
    leaves the records buffered for the next flush."""

    def __init__(self, store: ObjectStore, next_seq: int, snapshot_seq: int = 0, *,
                 compact_every: int = COMPACT_EVERY, snapshot_objects: int = 0, records_since: int = 0):
        self.store = store
        self.next_seq = next_seq
        self.snapshot_seq = snapshot_seq
        self.compact_every = compact_every
        self.writer = f"pid {os.getpid()} on {socket.gethostname()}"
        self._lock = threading.Lock()
        self._buffer: list[dict[str, Any]] = []
        self._flush_lock = threading.Lock()
        self.segments_written = 0
        self.snapshot_objects = snapshot_objects  # objects in the newest snapshot
        self.records_since = records_since  # records in the segments after it

    def seen(self, key: str, etag: str | None, digest: str | None, metadata: Mapping[str, str] | None) -> None:
        """The object `key` is at version `etag` with these bytes and metadata. Ignored without a version or
        metadata (nothing a restart could use); metadata too large for S3 is not kept (the object is read)."""
        if etag is None or metadata is None:
            return
        if sum(len(k) + len(v) for k, v in metadata.items()) > MAX_METADATA_CHARS:
            self.removed(key)  # whatever the journal knew of it is no longer true
            return
        with self._lock:
            self._buffer.append({"k": key, "e": etag, "d": digest, "m": dict(metadata)})

    def told(self, key: str) -> None:
        """The completion of the computation that wrote `key` (its last recorded version) was told."""
        with self._lock:
            self._buffer.append({"k": key, "t": 1})

    def attempts(self, computation: str, attempts: int, alternative: int, variant_attempts: int, lost: int,
                 errors: tuple[str, ...], retry_at: float | None, cancelled: bool = False) -> None:
        """`computation` made `attempts` attempts so far and the last one failed (the last few errors kept), or
        it was cancelled (a seventh item, 1; a reader of the six-item form sees no cancel)."""
        kept = [attempts, alternative, variant_attempts, lost, [e[:500] for e in errors[-3:]], retry_at]
        if cancelled:
            kept.append(1)
        with self._lock:
            self._buffer.append({"c": computation, "a": kept})

    def attempts_done(self, computation: str) -> None:
        """`computation` is done: what the journal kept of its attempts is dropped."""
        with self._lock:
            self._buffer.append({"c": computation, "x": 1})

    def removed(self, key: str) -> None:
        with self._lock:
            self._buffer.append({"k": key, "x": 1})

    def pending(self) -> int:
        with self._lock:
            return len(self._buffer)

    def flush(self) -> int:
        """Write what was recorded since the last flush as segments; returns the records written. Raises
        JournalConflict when another writer took a segment number, GclError on a store outage (the records
        stay buffered)."""
        with self._flush_lock:
            with self._lock:
                records, self._buffer = self._buffer, []
            written = 0
            try:
                while written < len(records):
                    chunk = records[written:written + MAX_RECORDS_PER_SEGMENT]
                    self._write_segment(chunk)
                    written += len(chunk)
                    self.records_since += len(chunk)
            finally:
                if written < len(records):
                    with self._lock:
                        self._buffer = records[written:] + self._buffer
            behind = self.next_seq - 1 - self.snapshot_seq
            if behind >= MAX_SEGMENTS or (behind >= self.compact_every
                                          and self.records_since >= self.snapshot_objects // 2):
                self.compact()
            return written

    def _write_segment(self, records: list[dict[str, Any]]) -> None:
        seq = self.next_seq
        nonce = uuid.uuid4().hex
        header = {"journal": FORMAT, "seq": seq, "writer": self.writer, "at": time.time(), "nonce": nonce}
        lines = [jsonbytes.dumps(header)]
        lines.extend(jsonbytes.dumps(r) for r in records)
        body = gzip.compress(b"\n".join(lines) + b"\n", compresslevel=1)
        try:
            self.store.create(_segment_key(seq), body)
        except ObjectAlreadyExists:
            theirs = _header_of(self.store, seq)
            if theirs.get("nonce") != nonce:  # not our own write, retried after its answer was lost
                raise JournalConflict(seq, str(theirs.get("writer", "unknown"))) from None
        self.next_seq = seq + 1
        self.segments_written += 1

    def compact(self) -> None:
        """Write a snapshot of everything up to the last written segment, then delete what it covers."""
        upto = self.next_seq - 1
        if upto <= self.snapshot_seq:
            return
        try:
            loaded = _load_once(self.store)
        except GclError:
            raise
        except Exception as exc:
            # Someone damaged a segment or snapshot: the journal is only a cache, so it starts afresh (a restart
            # then reads the objects themselves) rather than stopping the service.
            log.warning("journal in %s cannot be read back for compaction (%s: %s); starting it afresh",
                        self.store.describe(), type(exc).__name__, str(exc)[:200])
            loaded = Loaded({}, {}, upto + 1, 0, 0, 0)
        if loaded.next_seq - 1 != upto:
            raise JournalConflict(loaded.next_seq - 1,
                                  str(_header_of(self.store, loaded.next_seq - 1).get("writer", "unknown")))
        doc = {"journal": FORMAT, "seq": upto, "writer": self.writer, "at": time.time(),
               "objects": {k: [v.etag, v.digest, dict(v.metadata), v.told] for k, v in loaded.objects.items()},
               "attempts": loaded.attempts}
        body = gzip.compress(jsonbytes.dumps(doc), compresslevel=1)
        try:
            self.store.create(_snapshot_key(upto), body)
        except ObjectAlreadyExists:
            pass  # the same segments give the same snapshot: ours, retried, or another reader's compaction
        previous, self.snapshot_seq = self.snapshot_seq, upto
        self.snapshot_objects, self.records_since = len(doc["objects"]), 0
        for info in list(self.store.list(SEGMENTS)):
            seq = _seq_of(info.key, SEGMENTS)
            if seq is not None and seq <= upto:
                self._delete(info.key)
        for info in list(self.store.list(SNAPSHOTS)):
            seq = _seq_of(info.key, SNAPSHOTS)
            if seq is not None and seq <= previous:
                self._delete(info.key)
        log.info("journal: compacted %d object(s) into snapshot %d", len(doc["objects"]), upto)

    def _delete(self, key: str) -> None:
        try:
            self.store.delete(key)
        except ObjectNotFound:
            pass


def _header_of(store: ObjectStore, seq: int) -> dict[str, Any]:
    """The header of segment `seq` ({} if it is damaged); a store error is raised, never taken for a conflict."""
    body = store.get(_segment_key(seq)).body
    try:
        header = jsonbytes.loads(gzip.decompress(body).splitlines()[0])
    except Exception:
        return {}
    return header if isinstance(header, dict) else {}
