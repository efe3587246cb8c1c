"""gcl-orchestrator at scale (`make bench-scale`; not part of the tests): a tree fan-out end to end, then a
restart of the finished store, at several sizes. Prints each figure next to its target and writes JSON to
bench/results/.

The tree: a root reads "GROUPS LEAVES" and emits GROUPS group heads and a top join over the groups' joins; each
group head emits LEAVES leaves and a join over them. Handlers do nothing (bench/handlers.py): the work measured
is the orchestration. Each size runs in a process of its own on the local store, 2 worker processes, so the
orchestrator's peak memory (its resident set, workers not counted) belongs to that size alone.

Figures per size:
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
from gcl_orchestrator.gcl import encode_gcl, spec_from_mapping  # noqa: E402
from gcl_orchestrator.runtime import tune_garbage_collection  # noqa: E402
from gcl_orchestrator.storage import open_store  # noqa: E402
from run import print_table  # noqa: E402  (bench/run.py, beside this file)

HANDLERS = str(HERE / "handlers.py")
RESULTS = HERE / "results"


def tree_shape(n: int) -> tuple[int, int]:
    """Groups and leaves per group for about `n` computations (1 + groups * (leaves + 2) + 1)."""
    groups = max(1, int(math.sqrt(n)))
    leaves = max(1, (n - 2) // groups - 2)
    return groups, leaves


def _orchestrator(uri: str, rebuild: bool = False, max_emit: int | None = None):
    return build_orchestrator(RunSettings(store=uri, handlers=[HANDLERS], workers=2, until_idle=True, quiet_s=0.3,
                                          deadlock_grace_s=None, rebuild=rebuild, max_emit=max_emit))


def one_size(n: int, uri: str) -> dict:
    """Run the tree of about `n` computations on the store at `uri`, then restart it twice (journal, rebuild)."""
    logging.basicConfig(level=logging.WARNING)
    tune_garbage_collection()
    groups, leaves = tree_shape(n)
    total = 2 + groups * (leaves + 2)
    store = open_store(uri)
    enc = encode_gcl([spec_from_mapping({"computation": "root", "handler_type": "tree_root", "inputs": ["seed.txt"],
                                         "output": "root.json"})])
    store.put("seed.txt", f"{groups} {leaves}".encode(), enc.metadata)
    t0 = time.monotonic()
    orch = _orchestrator(uri)
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
        again = _orchestrator(uri, rebuild=rebuild)
        res = again.run()
        wall = time.monotonic() - started - 0.3  # without the quiet period --until-idle waits
        restarts[label] = {"wall_s": wall, "exit_code": res.exit_code, "reran": res.stats["succeeded"],
                           **again.restart}
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
        {"figure": f"fan-in of {r['parts']:,} parts: wall to the join's result", "value": f"{r['to_last_result_s']:.1f} s",
         "target": "< 15 s", "ok": r["to_last_result_s"] < 15,
         "detail": f"root done at {r['root_done_s']:.1f} s, parts {r['parts_s']:.1f} s "
                   f"({r['parts'] / r['parts_s']:,.0f}/s), join {r['join_s']:.1f} s; Dask: 52 s"},
        {"figure": f"fan-in of {r['parts']:,} parts: restart of the finished store", "value": f"{j['wall_s']:.2f} s",
         "target": "", "ok": None, "detail": f"{j['listed'] - j['from_journal']:,} objects read one by one, "
                                            f"{j['reran']} reran"},
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000", help="computations per run, comma-separated "
                    "(default 10000,100000; add 1000000 for the million, about 15 minutes and 2 GB of disk)")
    ap.add_argument("--dir", help="where the stores go (default: a temporary directory, removed afterwards)")
    ap.add_argument("--fan-in", type=int, default=30_000, metavar="N",
                    help="parts of the fan-in measured after the trees (default 30,000; 0: none)")
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a single size, in this process (internal)
    ap.add_argument("--store", help=argparse.SUPPRESS)
    ap.add_argument("--one-fan-in", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(one_size(args.one, args.store)))
        return 0
    if args.one_fan_in:
        print(json.dumps(fan_in(args.one_fan_in, args.store)))
        return 0

    sizes = [int(s) for s in args.sizes.split(",") if s]
    rows, raw = [], {}
    with tempfile.TemporaryDirectory(prefix="gclo-bench-scale-", dir=args.dir) as d:
        for n in sizes:
            print(f"tree of about {n:,} computations ...", flush=True)
            proc = subprocess.run([sys.executable, __file__, "--one", str(n), "--store", f"{d}/tree-{n}"],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                print(proc.stderr[-3000:], file=sys.stderr)
                return 1
            raw[n] = r = json.loads(proc.stdout.strip().splitlines()[-1])
            j, b = r["restart"]["journal"], r["restart"]["rebuild"]
            rows += [
                {"figure": f"{r['computations']:,}: end-to-end rate", "value": f"{r['rate_per_s']:,.0f}/s",
                 "target": ">= 2,000/s", "ok": r["rate_per_s"] >= 2000},
                {"figure": f"{r['computations']:,}: orchestrator peak memory",
                 "value": f"{r['peak_rss_mb']:,.0f} MB", "target": "<= 1 KB/comp.",
                 "detail": f"{r['bytes_per_computation']:,.0f} bytes per computation"},
                {"figure": f"{r['computations']:,}: restart of the finished store (journal)",
                 "value": f"{j['wall_s']:.2f} s", "target": "<= 10 s", "ok": j["wall_s"] <= 10,
                 "detail": f"{j['listed'] - j['from_journal']:,} of {j['listed']:,} objects read one by one, "
                           f"{j['reran']} reran"},
                {"figure": f"{r['computations']:,}: restart reading every object (--rebuild)",
                 "value": f"{b['wall_s']:.2f} s", "target": "", "ok": None,
                 "detail": f"{b['listed'] - b['from_journal']:,} objects read, {b['reran']} reran"},
                {"figure": f"{r['computations']:,}: status document write", "value": f"{r['status_write_s']:.2f} s",
                 "target": "", "ok": None},
                {"figure": f"{r['computations']:,}: gclo status --state failed", "value":
                 f"{r['status_failed_s']:.2f} s", "target": "<= 1 s", "ok": r["status_failed_s"] <= 1},
            ]
        if args.fan_in:
            print(f"fan-in of {args.fan_in:,} parts ...", flush=True)
            proc = subprocess.run([sys.executable, __file__, "--one-fan-in", str(args.fan_in), "--store",
                                   f"{d}/fan-in-{args.fan_in}"], capture_output=True, text=True)
            if proc.returncode != 0:
                print(proc.stderr[-3000:], file=sys.stderr)
                return 1
            raw["fan-in"] = json.loads(proc.stdout.strip().splitlines()[-1])
    if sizes:
        first, last = raw[sizes[0]], raw[sizes[-1]]
        if len(sizes) > 1:
            flat = last["rate_per_s"] / first["rate_per_s"]
            rows.append({"figure": f"rate at {last['computations']:,} / rate at {first['computations']:,}",
                         "value": f"{flat:.2f}", "target": ">= 0.8", "ok": flat >= 0.8})
    if "fan-in" in raw:
        rows += fan_in_rows(raw["fan-in"])
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
