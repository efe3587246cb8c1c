"""`gclo`: parse arguments into settings and call one command. No logic lives here."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Sequence

from . import __version__, commands
from .config import EVENT_CHOICES, DevSettings, RunSettings
from .errors import ConfigError, ExecutorUnavailable, GclError, HandlerLoadError, RulesError, SpecError, StorageError
from .model import State
from .service.client import ApiUnreachable
from .views import DEFAULT_LIMIT

EPILOG = """examples:
  gclo run --store ./bucket --handlers handlers/analytics.py --rules handlers/rules.yaml --until-idle
  gclo dev --handlers handlers/analytics.py --rules handlers/rules.yaml      # a local S3 server, then run
  gclo run --store s3://my-bucket --sqs-queue gclo-events --handlers my_handlers.py
  gclo put data.csv incoming/data.csv --store ./bucket --gcl step.yaml
  gclo status --store s3://my-bucket
  gclo graph --store ./bucket --format dot | dot -Tsvg > graph.svg
  gclo lineage reports/sales.md --store ./bucket     # what a result was computed from, and is it current
  gclo rerun profile:sales --downstream --store ./bucket
  gclo logs profile:sales --store ./bucket           # what its latest attempt printed, logged and failed with
  gclo run --store ./bucket --handlers h.py --api 127.0.0.1:8765      # with the HTTP API and live page
  gclo submit step.yaml --api 127.0.0.1:8765     # answers with each computation's state (or --store ./bucket)
  gclo cancel train:big --api 127.0.0.1:8765
  gclo validate pipeline.yaml

exit codes: 0 success; 1 a computation failed, waits, or GCL was rejected (run), invalid GCL (validate), a part
of the lineage is not current (lineage), no status yet (status, graph), no such log (logs), submit and cancel
refused (invalid GCL, a conflict, nothing to cancel);
2 bad arguments, handlers or rules; 3 the store cannot be used, the executor cannot go on, or no API answers
(submit, cancel); 130 interrupted;
141 the output pipe was closed (gclo status | head).

environment: AWS_* as for any boto3 client; GCLO_API_TOKEN, the API's token (run: the one it requires;
submit, cancel: the one they send); GCLO_API_URL, the API submit and cancel talk to; GCLO_AUDIT_LOG=FILE appends one JSON line per attempt start and
output commit, from every worker process (who wrote which key, in which attempt)."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gclo", description="Run computation graphs that grow from GCL carried by "
                                "the objects in a bucket.", epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"gclo {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    p.add_argument("-q", "--quiet", action="store_true", help="log only warnings and errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    store_help = "the store: s3://BUCKET[/PREFIX], a directory, file://DIR, or memory://NAME"
    endpoint_help = "S3 endpoint, e.g. http://127.0.0.1:8333 (default: AWS_ENDPOINT_URL, else AWS)"

    def add_store(p: argparse.ArgumentParser) -> None:
        p.add_argument("--store", required=True, help=store_help)
        p.add_argument("--endpoint-url", metavar="URL", help=endpoint_help)

    def add_run_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--handlers", action="append", required=True, metavar="FILE_OR_MODULE",
                       help="a .py file or module with @handler functions (repeatable)")
        p.add_argument("--rules", metavar="FILE", help="YAML rules mapping key globs to GCL for files without "
                       "GCL (also read from .gclo/rules.yaml in the store)")
        p.add_argument("--workers", type=int, metavar="N", help="worker processes (default: the core count)")
        p.add_argument("--until-idle", action="store_true",
                       help="exit once nothing is ready or running and nothing arrived for --quiet-period seconds")
        p.add_argument("--quiet-period", dest="quiet_s", type=float, default=1.0, metavar="SECONDS",
                       help="quiet period for --until-idle (default 1.0)")
        p.add_argument("--executor", default="process", metavar="process|thread|dask://HOST:PORT|dask-local:N",
                       help="where handlers run: worker processes (the default), threads of this process, the workers "
                            "of a Dask scheduler (tls:// too), or a Dask cluster of N local worker processes started "
                            "for the run (README, \"Scaling out\")")
        p.add_argument("--api", metavar="HOST:PORT",
                       help="serve the HTTP API and the live page here, e.g. 127.0.0.1:8765 (README, \"The HTTP "
                            "API and the live page\"); every request needs the token: GCLO_API_TOKEN, or one "
                            "generated and printed at start")

    r = sub.add_parser("run", help="run the orchestrator on a store",
                       description="Watch a store, grow the graph from the GCL objects carry, and run handlers.")
    add_store(r)
    add_run_options(r)
    r.add_argument("--events", choices=EVENT_CHOICES, default="auto",
                   help="how new objects are noticed (default auto: a filesystem watch for directories; on S3 "
                        "the source the other options point at, MinIO's listener on MinIO, else polling)")
    r.add_argument("--sqs-queue", metavar="NAME_OR_URL", help="SQS queue receiving the bucket's notifications "
                   "(see setup-events)")
    r.add_argument("--filer", metavar="HOST:PORT", help="SeaweedFS filer, to follow its metadata stream")
    r.add_argument("--webhook-host", default="127.0.0.1", help="address for the MinIO webhook receiver")
    r.add_argument("--webhook-port", type=int, default=9010, help="port for the MinIO webhook receiver")
    r.add_argument("--poll-interval", dest="poll_interval_s", type=float, default=1.0, metavar="SECONDS",
                   help="listing interval with --events poll (default 1.0)")
    r.add_argument("--reconcile-interval", dest="reconcile_s", type=float, metavar="SECONDS",
                   help="listing interval behind push sources (default 5 on a directory, 15 on S3)")
    r.add_argument("--resources", metavar="NAME=AMOUNT,...",
                   help="capacity of the general pool, e.g. cpu=4,memory_mb=8000,gpu=1 (cpu defaults to --workers; "
                        "a resource not named has none)")
    r.add_argument("--pool", dest="pools", action="append", default=[], metavar="TYPE=N[:NAME=AMOUNT,...]",
                   help="a pool of N workers that alone runs handler type TYPE, e.g. ml_handler=1:gpu=1 (repeatable)")
    r.add_argument("--ageing-rate", dest="ageing", type=float, default=1.0, metavar="POINTS_PER_S",
                   help="priority points ready work gains per second of waiting, so low priority never starves "
                        "(default 1.0)")
    r.add_argument("--max-emit", type=int, metavar="N",
                   help="computations one handler attempt may emit (default 10,000): bounds runaway fan-outs")
    r.add_argument("--deadlock-grace", default="60", metavar="SECONDS|off",
                   help="after this long with nothing running or arriving, work waiting for inputs that nothing "
                        "produces is failed as deadlocked with --until-idle, and reported as stalled (still "
                        "waiting) without it (default 60)")
    r.add_argument("--fsync", action="store_true",
                   help="local store: flush every output and its metadata to disk before it counts as committed "
                        "(survives power loss; slower)")
    r.add_argument("--rebuild", action="store_true",
                   help="at start, read every object's metadata instead of what the journal (.gclo/journal/) "
                        "knows of it: after the journal was lost, or objects' GCL was changed in place while "
                        "nothing ran")
    r.add_argument("--unsafe-skip-create-check", dest="skip_create_check", action="store_true",
                   help="do not check at start that the store honours create-if-absent (If-None-Match: *); on a "
                        "server that ignores it, outputs can be written twice")

    d = sub.add_parser("dev", help="start a local S3 server (SeaweedFS) and run the orchestrator on it",
                       description="Starts SeaweedFS on 127.0.0.1 with generated credentials, creates the bucket, "
                       "prints how to drop files into it, and runs the orchestrator on it. Ctrl-C stops all.")
    add_run_options(d)
    d.add_argument("--bucket", default="gclo", help="bucket to create (default gclo)")
    d.add_argument("--data-dir", metavar="DIR", help="keep SeaweedFS's data here (default: a temporary directory)")
    d.add_argument("--s3-port", type=int, metavar="PORT", help="S3 port (default: a free one)")
    d.add_argument("--put", nargs=2, action="append", default=[], metavar=("LOCAL_FILE", "KEY"),
                   help="upload a file before running (repeatable)")
    d.add_argument("--show", action="append", default=[], metavar="KEY", help="print this object at the end")

    e = sub.add_parser("setup-events", help="create an SQS queue and the bucket notification feeding it",
                       description="Idempotent: creates the queue if missing, allows the bucket to send to it, "
                       "and adds (or replaces) gclo's entry in the bucket's notification configuration.")
    add_store(e)
    e.add_argument("--queue", default="gclo-events", help="queue name or URL (default gclo-events)")

    u = sub.add_parser("put", help="upload a file with GCL in its metadata")
    u.add_argument("local_file", help="file to upload (- for standard input)")
    u.add_argument("key", help="object key in the store")
    add_store(u)
    u.add_argument("--gcl", metavar="FILE_OR_TEXT", help="GCL for the computations that follow this object")

    s = sub.add_parser("status", help="show every computation and rejected spec of a store")
    add_store(s)
    s.add_argument("--json", action="store_true", help="print the status document as JSON")
    s.add_argument("--state", choices=[st.value for st in State], help="only computations in this state")

    g = sub.add_parser("graph", help="export the live graph with each node's state (dot, mermaid, json)")
    add_store(g)
    g.add_argument("--format", choices=("dot", "mermaid", "json"), default="dot")
    g.add_argument("--state", choices=[st.value for st in State], help="only computations in this state")
    g.add_argument("--around", metavar="KEY", help="only what is within two steps of this key or computation "
                   "(what reads or writes it, and what reads or writes those)")
    g.add_argument("--limit", type=int, default=DEFAULT_LIMIT, metavar="N",
                   help=f"draw at most N computations (default {DEFAULT_LIMIT}; 0 for all)")

    li = sub.add_parser("lineage", help="print what an object was computed from, and whether each part is current",
                        description="Follows the runs each output records (the version of every input it read) "
                        "back from KEY. Exit code 1 if any part changed or was deleted since.")
    li.add_argument("key", metavar="KEY", help="the object to start from")
    add_store(li)

    rr = sub.add_parser("rerun", help="ask the orchestrator running on a store to run a computation again",
                        description="Leaves a request under .gclo/requests/ in the store: the orchestrator running "
                        "on it (or the next one to start) runs the computation again, as a new run. Anything "
                        "whose result comes out different runs again too; with --downstream, everything after it "
                        "runs again regardless (after a handler change, say).")
    rr.add_argument("target", metavar="NAME_OR_KEY", help="a computation's name, or a key (its producer runs)")
    rr.add_argument("--downstream", action="store_true", help="also run again everything that follows from it")
    add_store(rr)

    lg = sub.add_parser("logs", help="print what a computation's handler wrote in one attempt (the latest by default)",
                        description="Prints the log one attempt of a computation left in the store "
                        "(.gclo/logs/): its ctx.log lines with time and level, what it printed to stdout and "
                        "stderr, and the traceback it failed with. An attempt that wrote nothing has no log. A "
                        "long log keeps its first 16 KB and last 48 KB. Exit code 1 if there is no log.")
    lg.add_argument("computation", metavar="NAME", help="the computation's name, as `gclo status` shows it")
    lg.add_argument("--attempt", type=int, metavar="N",
                    help="this attempt (from 1; default: the latest one that has a log)")
    add_store(lg)

    def add_api_target(p: argparse.ArgumentParser) -> None:
        p.add_argument("--api", metavar="HOST:PORT", help="the HTTP API of a running orchestrator (default: "
                       "GCLO_API_URL)")
        p.add_argument("--token", help="its token (default: GCLO_API_TOKEN)")
        p.add_argument("--store", help="where no API is named: " + store_help)
        p.add_argument("--endpoint-url", metavar="URL", help=endpoint_help)

    sb = sub.add_parser("submit", help="hand a GCL document to a running orchestrator",
                        description="Through the orchestrator's HTTP API (--api): the answer gives each "
                        "computation's state, or every problem and nothing registered. Without an API (--store): "
                        "the document is checked here and kept under submitted/ in the store, where the "
                        "orchestrator picks it up. Either way it is kept in the store and survives restarts.")
    sb.add_argument("file", metavar="FILE", help="a GCL file (YAML or JSON; - for standard input)")
    add_api_target(sb)

    ca = sub.add_parser("cancel", help="stop a computation (a running attempt too); its dependents fail",
                        description="The computation fails as cancelled and what depends on it is "
                        "upstream-failed; gclo rerun brings it back. Through the HTTP API (--api) the answer "
                        "is immediate; with --store a request is left for the orchestrator running on it.")
    ca.add_argument("target", metavar="NAME_OR_KEY", help="a computation's name, or a key (its producer)")
    add_api_target(ca)

    v = sub.add_parser("validate", help="check GCL files; print every problem")
    v.add_argument("files", nargs="+", metavar="FILE", help="GCL files (YAML or JSON; - for standard input)")
    return p


def _grace(text: str) -> float | None:
    if text.strip().lower() in ("off", "none", "never"):
        return None
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"--deadlock-grace {text!r}: give seconds or off") from None


def _configure_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
    root = logging.getLogger("gclo")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    try:
        code = _main(argv)
        sys.stdout.flush()  # here, where a closed pipe can be answered, not at interpreter exit
        return code
    except BrokenPipeError:
        # The reader went away (`gclo status | head`): stop quietly, as tools killed by SIGPIPE do.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except OSError:
            pass
        return commands.EXIT_CLOSED_PIPE


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    _configure_logging(args.verbose, args.quiet)
    try:
        if args.command == "run":
            return commands.run(RunSettings(
                store=args.store, handlers=args.handlers, workers=args.workers, until_idle=args.until_idle,
                rules=args.rules, events=args.events, poll_interval_s=args.poll_interval_s,
                reconcile_interval_s=args.reconcile_s, quiet_s=args.quiet_s, executor=args.executor,
                endpoint_url=args.endpoint_url, sqs_queue=args.sqs_queue, filer=args.filer,
                webhook_host=args.webhook_host, webhook_port=args.webhook_port, resources=args.resources,
                pools=args.pools, ageing_per_s=args.ageing, deadlock_grace_s=_grace(args.deadlock_grace),
                max_emit=args.max_emit, fsync=args.fsync, check_create=not args.skip_create_check,
                rebuild=args.rebuild, api=args.api))
        if args.command == "dev":
            return commands.dev(DevSettings(
                handlers=args.handlers, rules=args.rules, bucket=args.bucket, data_dir=args.data_dir,
                s3_port=args.s3_port, workers=args.workers, until_idle=args.until_idle, quiet_s=args.quiet_s,
                executor=args.executor, api=args.api,
                puts=[tuple(p) for p in args.put], show=args.show))
        if args.command == "setup-events":
            return commands.setup_events(args.store, args.queue, args.endpoint_url)
        if args.command == "put":
            return commands.put(args.local_file, args.key, args.store, args.gcl, endpoint_url=args.endpoint_url)
        if args.command == "status":
            return commands.status(args.store, args.json, args.state, endpoint_url=args.endpoint_url)
        if args.command == "lineage":
            return commands.lineage(args.store, args.key, endpoint_url=args.endpoint_url)
        if args.command == "rerun":
            return commands.rerun(args.store, args.target, args.downstream, endpoint_url=args.endpoint_url)
        if args.command == "submit":
            return commands.submit(args.file, args.api, args.token, args.store, endpoint_url=args.endpoint_url)
        if args.command == "cancel":
            return commands.cancel(args.target, args.api, args.token, args.store, endpoint_url=args.endpoint_url)
        if args.command == "logs":
            if args.attempt is not None and args.attempt < 1:
                raise ConfigError("--attempt counts from 1")
            return commands.logs(args.store, args.computation, args.attempt, endpoint_url=args.endpoint_url)
        if args.command == "graph":
            if args.limit < 0:
                raise ConfigError("--limit must be 0 (all) or more")
            return commands.graph(args.store, args.format, endpoint_url=args.endpoint_url, state=args.state,
                                  around=args.around, limit=args.limit or None)
        return commands.validate(args.files)
    except (ConfigError, HandlerLoadError, RulesError, ValueError) as exc:
        print(f"gclo {args.command}: {exc}", file=sys.stderr)
        return commands.EXIT_USAGE
    except SpecError as exc:
        print(f"gclo {args.command}: {exc}", file=sys.stderr)
        return commands.EXIT_USAGE
    except StorageError as exc:
        print(f"gclo {args.command}: store error: {exc}", file=sys.stderr)
        return commands.EXIT_STORE
    except (ExecutorUnavailable, ApiUnreachable) as exc:
        print(f"gclo {args.command}: {exc}", file=sys.stderr)
        return commands.EXIT_STORE
    except GclError as exc:
        print(f"gclo {args.command}: {exc}", file=sys.stderr)
        return commands.EXIT_FAILED
    except KeyboardInterrupt:
        return commands.EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
