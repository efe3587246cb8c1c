"""Large fan-in: a join over up to 100,000 parts, declared by one handler as a range of keys or as a list, carried
compactly in metadata (or by a sidecar), journaled, recovered at restart with its exact keys, and shown without
its thousands of keys in the status."""
from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from gcl_orchestrator.core import Scheduler
from gcl_orchestrator.gcl import encode_gcl, spec_from_mapping
from gcl_orchestrator.gcl.metadata import encode_lineage, read_gcl_fields
from gcl_orchestrator.journal import load_journal
from gcl_orchestrator.model import (
    ComputationSucceeded,
    Dispatch,
    ObjectAvailable,
    ObjectRemoved,
    SpecsSubmitted,
    State,
)
from gcl_orchestrator.runtime.context import HandlerContext
from gcl_orchestrator.storage import LocalDirectoryStore, MemoryObjectStore
from gcl_orchestrator.views import lineage_lines
from gcl_orchestrator.views.lineage import MAX_LISTED
from gcl_orchestrator.views.status import SHOWN_MISSING, build_status, render_status

from .test_journal import run  # the orchestrator on a store, as the journal's tests run it

HANDLERS = str(Path(__file__).parent.parent / "handlers" / "pipeline.py")
PARTS = {"pattern": "parts/{i:06d}.json", "count": 100_000}


def join_spec(inputs=(PARTS,)):
    return spec_from_mapping({"computation": "total", "handler_type": "total", "inputs": list(inputs),
                              "output": "total.json"})


# --- the core sees exact keys ----------------------------------------------------------------------------------

def test_a_join_over_a_range_waits_for_exactly_its_keys_and_runs_after_the_last():
    core = Scheduler(slots=2)
    spec = join_spec([{"pattern": "parts/{i:05d}.json", "count": 30_000}])
    core.handle([SpecsSubmitted("cli", (spec,))], 0.0)
    out = core.handle([ObjectAvailable(f"parts/{i:05d}.json") for i in range(29_999)], 1.0)
    assert not [i for i in out if isinstance(i, Dispatch)]
    assert core.record("total").missing == {"parts/29999.json"}
    (dispatch,) = [i for i in core.handle([ObjectAvailable("parts/29999.json")], 2.0) if isinstance(i, Dispatch)]
    assert len(dispatch.inputs) == 30_000 and dispatch.inputs[-1][0] == "parts/29999.json"
    core.handle([ComputationSucceeded("total", 1, "e", ())], 3.0)
    assert core.record("total").state is State.DONE


def test_the_status_names_a_join_s_missing_parts_by_the_first_hundred_and_how_many():
    core = Scheduler(slots=2)
    core.handle([SpecsSubmitted("cli", (join_spec(),))], 0.0)
    core.handle([ObjectAvailable("parts/000000.json")], 1.0)
    (item,) = build_status(core, {}, [], 2.0)["computations"]
    assert item["missing_count"] == 99_999 and len(item["missing"]) == SHOWN_MISSING
    assert item["missing"][:2] == ["parts/000001.json", "parts/000002.json"]
    line = render_status({"computations": [item], "counts": {}}).splitlines()[-1]
    assert line.endswith("waiting for 99,999 inputs: parts/000001.json, parts/000002.json, parts/000003.json, ...")
    assert len(line) < 200


def test_a_handler_may_read_every_part_of_a_large_join_and_nothing_else():
    store = MemoryObjectStore(f"fanin-{uuid.uuid4().hex[:8]}")
    spec = join_spec([{"pattern": "p/{i}", "count": 20_000}])
    for key in spec.inputs:
        store.put(key, b"1")
    store.put("other", b"1")
    ctx = HandlerContext(spec, 1, store)
    assert sum(int(ctx.read_text(k)) for k in spec.inputs) == 20_000
    with pytest.raises(Exception, match=r"'other' is not an input of computation 'total' \(inputs: p/0, p/1, p/2, "
                                        r"p/3, p/4 and 19995 more\)"):
        ctx.read_bytes("other")


def test_a_range_join_emitted_with_thousands_of_parts_stays_a_few_bytes_of_its_sidecar():
    parts = [spec_from_mapping({"computation": f"part:{i}", "handler_type": "h", "inputs": ["root.json"],
                                "output": f"parts/{i:06d}.json"}) for i in range(1000)]
    alone = encode_gcl([join_spec()])
    assert alone.sidecar_key is None and len(alone.metadata["gcl"]) < 200
    with_parts = encode_gcl([*parts, join_spec()])
    assert with_parts.sidecar_key is not None and b'"inputs":[{"count":100000' in with_parts.sidecar_body


# --- declared by one handler, recovered at restart -------------------------------------------------------------

@pytest.fixture(params=["memory", "local"])
def store(request, tmp_path):
    if request.param == "memory":
        return MemoryObjectStore(f"fanin-{uuid.uuid4().hex[:8]}")
    return LocalDirectoryStore(tmp_path / "store")


@pytest.mark.parametrize("form", ["range", "list"])
def test_a_join_over_a_hundred_thousand_parts_declared_by_one_handler_is_recovered_at_restart(store, form):
    """Given a handler that declares a join over 100,000 parts nothing has produced yet, when the orchestrator
    is started again on the store, then the journal brings the join back with its 100,000 exact keys."""
    seed = {"computation": "declare", "handler_type": "declare_join", "inputs": ["seed.txt"],
            "output": "declared.json", "params": {"count": 100_000, "form": form}}
    store.put("seed.txt", b"go", encode_gcl([spec_from_mapping(seed)]).metadata)
    first, _ = run(store)
    assert first.core.record("declare").state is State.DONE
    assert len(first.core.record("total").missing) == 100_000

    declared = load_journal(store).objects["declared.json"]  # journaled: its metadata is small either way
    fields = read_gcl_fields(declared.metadata)
    assert (fields.text is not None) == (form == "range")  # a range fits inline; the list needs a sidecar

    again, _ = run(store)
    total = again.core.record("total")
    assert total is not None and total.state is State.WAITING and len(total.missing) == 100_000
    assert total.spec.inputs == tuple(f"parts/{i:06d}.json" for i in range(100_000))
    assert again.restart["from_journal"] == again.restart["listed"]  # nothing read one by one


def test_a_join_whose_parts_all_run_again_and_come_out_the_same_stays_done_and_is_not_run_again():
    """Given a join over 300 parts of one input, all done, when the input is replaced and every part runs again
    and writes what it wrote before, then each part's release tells at once whether the join still reads a held
    part (a count kept per record, checked against the tables after every step), and the join is not run again."""
    core = Scheduler(slots=4)
    parts = tuple(spec_from_mapping({"computation": f"p{i}", "handler_type": "h", "inputs": ["in"],
                                     "output": f"parts/{i:06d}.json"}) for i in range(300))
    specs = parts + (join_spec([{"pattern": "parts/{i:06d}.json", "count": 300}]),)

    def drive(out, now):
        running = [i for i in out if isinstance(i, Dispatch)]
        while running:
            now += 1.0
            out = core.handle([ComputationSucceeded(d.spec.computation, d.attempt, f"stamp-{d.spec.computation}",
                                                    (), output_identity=f"id-{d.spec.computation}")
                               for d in running], now)
            running = [i for i in out if isinstance(i, Dispatch)]
        return now

    now = drive(core.handle([ObjectAvailable("in", specs, None, "s1", "v1")], 0.0), 0.0)
    assert core.record("total").state is State.DONE and core.record("total").attempts == 1
    drive(core.handle([ObjectAvailable("in", specs, None, "s2", "v2")], now + 1), now + 1)
    assert all(core.record(p.computation).attempts == 2 for p in parts)
    total = core.record("total")
    assert total.state is State.DONE and total.attempts == 1 and total.held_inputs == 0


def test_a_done_join_whose_parts_are_deleted_one_by_one_names_the_first_and_how_many_and_is_current_again():
    core = Scheduler(slots=2)
    keys = [f"parts/{i:06d}.json" for i in range(300)]
    core.handle([SpecsSubmitted("cli", (join_spec([{"pattern": "parts/{i:06d}.json", "count": 300}]),))]
                + [ObjectAvailable(k, (), None, f"s-{k}", f"v-{k}") for k in keys], 0.0)
    core.handle([ComputationSucceeded("total", 1, "stamp", (), output_identity="t")], 1.0)
    for n, key in enumerate(keys):
        core.handle([ObjectRemoved(key)], 2.0 + n)
    total = core.record("total")
    assert total.state is State.DONE and len(total.from_deleted) == 300
    assert total.note == ("computed from a deleted source: 'parts/000000.json', 'parts/000001.json', "
                          "'parts/000002.json', 'parts/000003.json', 'parts/000004.json' and 295 more")
    for n, key in enumerate(keys):  # the same versions back: current again, nothing runs
        assert not [i for i in core.handle([ObjectAvailable(key, (), None, f"s-{key}", f"v-{key}")], 400.0 + n)
                    if isinstance(i, Dispatch)]
    assert total.state is State.DONE and not total.from_deleted and total.note == ""


def test_the_lineage_of_a_join_follows_its_first_hundred_parts_and_says_how_many_more():
    store = MemoryObjectStore(f"fanin-{uuid.uuid4().hex[:8]}")
    spec = join_spec([{"pattern": "p/{i}", "count": 5000}])
    for key in spec.inputs:
        store.put(key, b"1")
    ctx = HandlerContext(spec, 1, store)
    for key in spec.inputs:
        ctx.read_bytes(key)
    lineage = encode_lineage("1:run", sorted(ctx.read_versions.items()))
    lineage.write_sidecar(store)
    store.put("total.json", b"5000", lineage.metadata)
    lines = lineage_lines(store, "total.json")
    assert len(lines) == 1 + MAX_LISTED + 1
    assert lines[-1] == f"  ... and {5000 - MAX_LISTED:,} more inputs (gclo lineage KEY for one)"
