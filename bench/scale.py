"""gcl-orchestrator at scale (`make bench-scale`; not part of the tests): a tree fan-out end to end, then a
restart of the finished store, at several sizes. Prints each figure next to its target and writes JSON to
bench/results/.

The tree: a root reads "GROUPS LEAVES" and emits GROUPS group heads and a top join over the groups' joins; each
group head emits LEAVES leaves and a join over them. Handlers do nothing (bench/handlers.py): the work measured
is the orchestration. Each size runs in a process of its own on the local store, 2 worker processes, so the
orchestrator's peak memory (its resident set, workers not counted) belongs to that size alone.

First this machine's speed today (a small CPU loop, a small file created and renamed), which every figure
follows. Figures per size:
  rate        computations per second from start to the last result
  memory      the orchestrator's peak resident set, and per computation
  restart     `gclo run` on the finished store until it is idle again, with the journal, and with --rebuild
              (every object read); how many objects each read one by one (HEADs), how many the journal knew
  status      how long the last write of the status document took, and `gclo status --state failed` (a process
              of its own, start-up included) on the finished store

Then a fan-in (`--fan-in N`, 30,000 by default; 0 leaves it out): a root reads N and emits N parts and one join
over all of them, declared as a range of keys; the wall time from start-up to the join's result, next to the
15 s target (Dask ran this graph in 52 s on this machine), with where it went (the root, which emits and
writes N + 1 specs; the parts; the join, which reads N parts), and a restart of the finished store.

Then the tree on SeaweedFS (`--seaweedfs N`, 100,000 by default; 0 leaves it out): a SeaweedFS of its own started
in the stores' directory, the orchestrator following its filer's metadata stream; the same figures, and what
each restart asked of the server: its requests next to the 1% of the objects (plus the journal's reads) that is
the target.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from gcl_orchestrator.config import RunSettings, build_orchestrator  # noqa: E402
from gcl_orchestrator.devservers import SeaweedFS  # noqa: E402
from gcl_orchestrator.gcl import encode_gcl, spec_from_mapping  # noqa: E402
from gcl_orchestrator.runtime import tune_garbage_collection  # noqa: E402
from gcl_orchestrator.storage import open_store  # noqa: E402
from run import fmt, machine_context, print_table  # noqa: E402  (bench/run.py, beside this file)

HANDLERS = str(HERE / "handlers.py")
RESULTS = HERE / "results"


def tree_shape(n: int) -> tuple[int, int]:
    """Groups and leaves per group for about `n` computations (1 + groups * (leaves + 2) + 1)."""
    groups = max(1, int(math.sqrt(n)))
    leaves = max(1, (n - 2) // groups - 2)
    return groups, leaves


def _orchestrator(uri: str, rebuild: bool = False, max_emit: int | None = None, filer: str | None = None):
    return build_orchestrator(RunSettings(store=uri, handlers=[HANDLERS], workers=2, until_idle=True, quiet_s=0.3,
                                          deadlock_grace_s=None, rebuild=rebuild, max_emit=max_emit,
                                          events="seaweedfs" if filer else "auto", filer=filer))


def one_size(n: int, uri: str, filer: str | None = None) -> dict:
    """Run the tree of about `n` computations on the store at `uri`, then restart it twice (journal, rebuild).
    `filer`: a SeaweedFS filer's HTTP address, whose metadata stream tells the orchestrator what arrives."""
    logging.basicConfig(level=logging.WARNING)
    tune_garbage_collection()
    groups, leaves = tree_shape(n)
    total = 2 + groups * (leaves + 2)
    store = open_store(uri)
    enc = encode_gcl([spec_from_mapping({"computation": "root", "handler_type": "tree_root", "inputs": ["seed.txt"],
                                         "output": "root.json"})])
    store.put("seed.txt", f"{groups} {leaves}".encode(), enc.metadata)
    t0 = time.monotonic()
    orch = _orchestrator(uri, filer=filer)
    result = orch.run()
    if result.exit_code != 0:
        raise RuntimeError(f"the tree failed: {result.failed[:3] or result.waiting[:3]}")
    to_last = (orch.stats.last_success or time.monotonic()) - t0
    status_s = orch._save_status()
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # As a user asks, in a process of its own, with Python's bytecode cache as it is by default (an environment
    # that turns it off makes every start compile the package again: half a second here); the first run fills it
    ask = [sys.executable, "-m", "gcl_orchestrator.cli", "status", "--store", uri, "--state", "failed"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run(ask, capture_output=True, check=True, env=env)
    started = time.monotonic()
    subprocess.run(ask, capture_output=True, check=True, env=env)
    failed_read_s = time.monotonic() - started
    del orch, result
    restarts = {}
    for label, rebuild in (("journal", False), ("rebuild", True)):
        started = time.monotonic()
        again = _orchestrator(uri, rebuild=rebuild, filer=filer)
        res = again.run()
        wall = time.monotonic() - started - 0.3  # without the quiet period --until-idle waits
        # What the server was sent, request by request (an S3 store counts each page of a listing), else the
        # store's calls
        sent = getattr(getattr(again.store, "inner", None), "requests", None)
        restarts[label] = {"wall_s": wall, "exit_code": res.exit_code, "reran": res.stats["succeeded"],
                           "requests": dict(sent if sent is not None else again.store.calls_by_kind()),
                           "store_calls": dict(again.store.calls_by_kind()), **again.restart}
        del again, res
    return {"computations": total, "groups": groups, "leaves": leaves, "to_last_result_s": to_last,
            "rate_per_s": total / to_last, "peak_rss_mb": peak_kb / 1024, "bytes_per_computation":
            peak_kb * 1024 / total, "status_write_s": status_s, "status_failed_s": failed_read_s,
            "restart": restarts}


def fan_in(n: int, uri: str) -> dict:
    """A root emits `n` parts and a join over a range of their keys; then a restart of the finished store."""
    logging.basicConfig(level=logging.WARNING)
    tune_garbage_collection()
    store = open_store(uri)
    enc = encode_gcl([spec_from_mapping({"computation": "root", "handler_type": "fan_in_root", "inputs": ["n.txt"],
                                         "output": "root.json"})])
    store.put("n.txt", str(n).encode(), enc.metadata)
    t0, wall0 = time.monotonic(), time.time()
    orch = _orchestrator(uri, max_emit=n + 1)
    result = orch.run()
    if result.exit_code != 0 or json.loads(store.get("total.json").body) != n * (n - 1):
        raise RuntimeError(f"the fan-in failed: {result.failed[:3] or result.waiting[:3]}")
    to_last = (orch.stats.last_success or time.monotonic()) - t0
    root, join = orch.core.record("root"), orch.core.record("join")
    figures = {"parts": n, "to_last_result_s": to_last, "root_done_s": root.finished_at - wall0,
               "parts_s": join.started_at - root.finished_at, "join_s": join.finished_at - join.started_at,
               "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    del orch, result
    started = time.monotonic()
    again = _orchestrator(uri, max_emit=n + 1)
    res = again.run()
    figures["restart"] = {"wall_s": time.monotonic() - started - 0.3, "exit_code": res.exit_code,
                          "reran": res.stats["succeeded"], **again.restart}
    return figures


def fan_in_rows(r: dict) -> list[dict]:
    j = r["restart"]
    return [
        {"figure": f"fan-in of {r['parts']:,} parts: wall to the join's result",
         "value": f"{r['to_last_result_s']:.1f} s",
         "target": "< 15 s", "ok": r["to_last_result_s"] < 15,
         "detail": f"root done at {r['root_done_s']:.1f} s, parts {r['parts_s']:.1f} s "
                   f"({r['parts'] / r['parts_s']:,.0f}/s), join {r['join_s']:.1f} s; Dask: 52 s"},
        {"figure": f"fan-in of {r['parts']:,} parts: restart of the finished store", "value": f"{j['wall_s']:.2f} s",
         "target": "", "ok": None, "detail": f"{j['listed'] - j['from_journal']:,} objects read one by one, "
                                            f"{j['reran']} reran"},
    ]


def tree_rows(r: dict, on: str = "") -> list[dict]:
    """The figures of one tree (`on`: the store, when it is not the local one), each next to its target."""
    j, b = r["restart"]["journal"], r["restart"]["rebuild"]
    name = f"{on + ', ' if on else ''}{r['computations']:,}"
    rows = [
        {"figure": f"{name}: end-to-end rate", "value": f"{r['rate_per_s']:,.0f}/s",
         **({"target": "", "ok": None} if on else {"target": ">= 2,000/s", "ok": r["rate_per_s"] >= 2000})},
        {"figure": f"{name}: orchestrator peak memory",
         "value": f"{r['peak_rss_mb']:,.0f} MB", "target": "<= 1 KB/comp.",
         "detail": f"{r['bytes_per_computation']:,.0f} bytes per computation"},
        {"figure": f"{name}: restart of the finished store (journal)",
         "value": f"{j['wall_s']:.2f} s", "target": "<= 10 s", "ok": j["wall_s"] <= 10,
         "detail": f"{j['listed'] - j['from_journal']:,} of {j['listed']:,} objects read one by one, "
                   f"{j['reran']} reran"},
    ]
    if on:  # what the restart asked of the server: every request its store sent, by operation
        asked = sum(j["requests"].values())
        bound = j["listed"] // 100 + j["journal_reads"]
        rows.append({"figure": f"{name}: requests of that restart", "value": f"{asked:,}",
                     "target": f"<= {bound:,}", "ok": asked <= bound,
                     "detail": ", ".join(f"{kind} {count:,}" for kind, count in sorted(j["requests"].items()))
                               + f"; 1% of {j['listed']:,} objects plus {j['journal_reads']} of the journal's"})
    rows += [
        {"figure": f"{name}: restart reading every object (--rebuild)",
         "value": f"{b['wall_s']:.2f} s", "target": "", "ok": None,
         "detail": f"{b['listed'] - b['from_journal']:,} objects read, {b['reran']} reran"},
        {"figure": f"{name}: status document write", "value": f"{r['status_write_s']:.2f} s",
         "target": "", "ok": None},
        {"figure": f"{name}: gclo status --state failed", "value":
         f"{r['status_failed_s']:.2f} s", "target": "<= 1 s", "ok": r["status_failed_s"] <= 1},
    ]
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000", help="computations per run, comma-separated "
                    "(default 10000,100000; add 1000000 for the million, about 15 minutes and 2 GB of disk)")
    ap.add_argument("--dir", help="where the stores go (default: a temporary directory, removed afterwards)")
    ap.add_argument("--fan-in", type=int, default=30_000, metavar="N",
                    help="parts of the fan-in measured after the trees (default 30,000; 0: none)")
    ap.add_argument("--seaweedfs", type=int, default=100_000, metavar="N",
                    help="computations of the tree run on a SeaweedFS of its own after the rest (default 100,000, "
                         "about 10 minutes; 0: none)")
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a single size, in this process (internal)
    ap.add_argument("--store", help=argparse.SUPPRESS)
    ap.add_argument("--filer", help=argparse.SUPPRESS)
    ap.add_argument("--one-fan-in", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(one_size(args.one, args.store, args.filer)))
        return 0
    if args.one_fan_in:
        print(json.dumps(fan_in(args.one_fan_in, args.store)))
        return 0

    sizes = [int(s) for s in args.sizes.split(",") if s]
    # This machine's speed today first: every figure below follows it (a virtual machine's CPU has been twice as
    # fast on one day as on another here), so runs of different days are compared through it
    rows = [{"figure": m["figure"], "value": fmt(m["value"], m["unit"]), "target": "", "ok": None}
            for m in machine_context()]
    raw: dict = {}

    def one(what: list[str], env: dict[str, str] | None = None) -> dict | None:
        proc = subprocess.run([sys.executable, __file__, *what], capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return None
        return json.loads(proc.stdout.strip().splitlines()[-1])

    with tempfile.TemporaryDirectory(prefix="gclo-bench-scale-", dir=args.dir) as d:
        for n in sizes:
            print(f"tree of about {n:,} computations ...", flush=True)
            if (r := one(["--one", str(n), "--store", f"{d}/tree-{n}"])) is None:
                return 1
            raw[n] = r
            rows += tree_rows(r)
        if args.fan_in:
            print(f"fan-in of {args.fan_in:,} parts ...", flush=True)
            if (r := one(["--one-fan-in", str(args.fan_in), "--store", f"{d}/fan-in-{args.fan_in}"])) is None:
                return 1
            raw["fan-in"] = r
        if args.seaweedfs:
            print(f"tree of about {args.seaweedfs:,} computations on SeaweedFS ...", flush=True)
            server = SeaweedFS.prepare(f"{d}/seaweedfs").start()
            try:
                server.create_bucket("scale")
                env = {**os.environ, **server.credentials_env()}
                r = one(["--one", str(args.seaweedfs), "--store", f"s3://scale?endpoint_url={server.endpoint}",
                         "--filer", server.filer], env)
            finally:
                server.stop()
            if r is None:
                return 1
            raw["seaweedfs"] = r
    if sizes:
        first, last = raw[sizes[0]], raw[sizes[-1]]
        if len(sizes) > 1:
            flat = last["rate_per_s"] / first["rate_per_s"]
            rows.append({"figure": f"rate at {last['computations']:,} / rate at {first['computations']:,}",
                         "value": f"{flat:.2f}", "target": ">= 0.8", "ok": flat >= 0.8})
    if "fan-in" in raw:
        rows += fan_in_rows(raw["fan-in"])
    if "seaweedfs" in raw:
        rows += tree_rows(raw["seaweedfs"], "SeaweedFS")
    print_table(rows, lambda r: r["value"])
    report = {"mode": "scale", "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "python": platform.python_version(), "machine": {"cpus": os.cpu_count(),
                                                               "platform": platform.platform()},
              "rows": rows, "raw": raw}
    args.results.mkdir(parents=True, exist_ok=True)
    out = args.results / f"scale-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=1))
    print(f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
