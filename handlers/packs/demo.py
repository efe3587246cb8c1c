"""Run one use-case pack end to end, as a user would: `gclo put` the starting objects, `gclo run`, print the
report, and exit 0 only if the result is right (the tuned model beats the baseline; the simulation's error is
under its tolerance; the tree beats the majority class).

    python handlers/packs/demo.py ml|sim|tree [--store DIR | --store s3://BUCKET --endpoint-url URL --filer H:P]

Objects go in with `gclo put` and the work runs with `gclo run`, so what this script does can be done by hand;
the report is read back with the store API. The default store, `demo-PACK-store`, is made afresh each time; a
directory given with --store must be empty or absent.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
GCLO = str(Path(sys.executable).with_name("gclo"))
BATCHES = 10

PACKS = {
    "ml": {"handlers": HERE / "ml.py", "report": "ml/report.md"},
    "sim": {"handlers": HERE / "sim.py", "report": "sim/report.md"},
    "tree": {"handlers": HERE / "tree.py", "report": f"tree/g{(BATCHES + 2) // 3}/report.md",
             "rules": HERE / "tree-rules.yaml"},
}
SEEDS = {
    "ml": ("ml/search.json", {"seed": 0, "trials": 27, "eta": 3, "min_epochs": 3},
           {"computation": "ml:plan", "handler_type": "ml_plan", "inputs": ["ml/search.json"],
            "output": "ml/plan.json"}),
    "sim": ("sim/problem.json", {"n": 30, "a_low": 0.01, "a_high": 1.0, "jump_at": 0.5, "t_end": 1.0,
                                 "segments": 10, "h0": 0.01, "tol": 1e-5, "min_step": 1e-6},
            {"computation": "sim:start", "handler_type": "sim_start", "inputs": ["sim/problem.json"],
             "output": "sim/start.json"}),
}


def gclo(*args: str, store: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run([GCLO, *args, *store], check=True, **kw)


def put_file(path: Path, key: str, store: list[str], gcl: dict | None = None) -> None:
    extra = ["--gcl", json.dumps(gcl)] if gcl else []
    gclo("put", str(path), key, *extra, store=store, stdout=subprocess.DEVNULL)


def tree_data(directory: Path) -> list[Path]:
    """The breast-cancer records, shuffled once: a held-out fifth, and the rest as BATCHES small batches."""
    import numpy as np
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    order = np.random.default_rng(0).permutation(len(data.target))
    header = ",".join(name.replace(" ", "_") for name in data.feature_names) + ",benign"

    def write(path: Path, rows) -> Path:
        lines = [header] + [",".join(f"{v:.6g}" for v in data.data[i]) + f",{data.target[i]}" for i in rows]
        path.write_text("\n".join(lines) + "\n")
        return path

    holdout, stream = order[: len(order) // 5], order[len(order) // 5:]
    files = [write(directory / "holdout.csv", holdout)]
    files += [write(directory / f"batch-{i:03d}.csv", part) for i, part in enumerate(np.array_split(stream, BATCHES))]
    return files


def check(pack: str, report: str) -> tuple[bool, str]:
    match = re.search(r"<!-- (\{.*\}) -->", report)
    figures = json.loads(match.group(1)) if match else {}
    if pack == "ml":
        ok = figures.get("tuned", 0) > figures.get("baseline", 1)
        return ok, f"tuned {figures.get('tuned')} vs baseline {figures.get('baseline')}"
    if pack == "sim":
        ok = figures.get("worst_error", 1) <= figures.get("bound", 0) and figures.get("implicit", 0) > 0
        return ok, f"worst error {figures.get('worst_error')} against tolerance {figures.get('bound')}"
    ok = figures.get("accuracy", 0) >= figures.get("majority", 1) + 0.1
    return ok, f"accuracy {figures.get('accuracy')} vs majority class {figures.get('majority')}"


def read(key: str, store_uri: str, endpoint: str | None) -> str | None:
    """An object's text through the public store API (None while it does not exist)."""
    from gcl_orchestrator.errors import ObjectNotFound
    from gcl_orchestrator.storage import open_store

    try:
        return open_store(store_uri, endpoint_url=endpoint, create=False).get(key).body.decode()
    except ObjectNotFound:
        return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pack", choices=sorted(PACKS))
    ap.add_argument("--store", help="a directory (default: a new one per pack) or s3://BUCKET")
    ap.add_argument("--endpoint-url")
    ap.add_argument("--filer", help="SeaweedFS filer, for its event stream")
    ap.add_argument("--workers", default="2")
    args = ap.parse_args(argv)
    pack = PACKS[args.pack]
    store_uri = args.store or f"demo-{args.pack}-store"
    if not store_uri.startswith("s3://"):
        if args.store is None:
            shutil.rmtree(store_uri, ignore_errors=True)  # ours, from the last demo
        elif Path(store_uri).exists() and any(Path(store_uri).iterdir()):
            print(f"demo: {store_uri} is not empty; give an empty or new directory (nothing was changed)",
                  file=sys.stderr)
            return 2
        Path(store_uri).mkdir(parents=True, exist_ok=True)
    store = ["--store", store_uri] + (["--endpoint-url", args.endpoint_url] if args.endpoint_url else [])
    run = [GCLO, "run", *store, "--handlers", str(pack["handlers"]), "--workers", args.workers]
    if args.filer:
        run += ["--filer", args.filer]
    if "rules" in pack:
        run += ["--rules", str(pack["rules"])]
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"gclo-{args.pack}-") as tmp:
        if args.pack in SEEDS:
            key, body, step = SEEDS[args.pack]
            path = Path(tmp) / "seed.json"
            path.write_text(json.dumps(body))
            put_file(path, key, store, step)
            code = subprocess.run([*run, "--until-idle", "--quiet-period", "1"]).returncode
        else:
            # Records arrive while the orchestrator runs: a service (no --until-idle), stopped once the last
            # generation's report is written.
            files = tree_data(Path(tmp))
            put_file(files[0], "stream/holdout.csv", store)
            service = subprocess.Popen(run, start_new_session=True)
            try:
                for i, path in enumerate(files[1:]):
                    put_file(path, f"stream/batch-{i:03d}.csv", store)
                    time.sleep(0.5)
                deadline = time.monotonic() + 300
                while read(pack["report"], store_uri, args.endpoint_url) is None:
                    if service.poll() is not None or time.monotonic() > deadline:
                        break
                    time.sleep(0.3)
            finally:
                if service.poll() is None:
                    service.send_signal(signal.SIGTERM)
                service.wait(60)
            code = 0
    report = read(pack["report"], store_uri, args.endpoint_url)
    if report is None:
        print(f"demo {args.pack}: no report at {pack['report']} (gclo run exited with {code})", file=sys.stderr)
        return 1
    print("\n" + report)
    ok, summary = check(args.pack, report)
    print(f"demo {args.pack}: {'OK' if ok else 'WRONG RESULT'}: {summary} ({time.monotonic() - started:.1f} s); "
          f"the store is {store_uri}, see `gclo status --store {store_uri}`")
    return 0 if ok and code in (0, 130) else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())
