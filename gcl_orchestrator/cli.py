"""`gclo`: parse arguments into settings and call one command. No logic lives here."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from . import __version__, commands
from .config import EVENT_CHOICES, RunSettings
from .errors import ConfigError, GclError, HandlerLoadError, RulesError, SpecError, StorageError
from .model import State

EPILOG = """examples:
  gclo run --store ./bucket --handlers handlers/analytics.py --rules handlers/rules.yaml --until-idle
  gclo put data.csv incoming/data.csv --store ./bucket --gcl step.yaml
  gclo status --store ./bucket
  gclo validate pipeline.yaml

exit codes: 0 success; 1 a computation failed, waits, or GCL was rejected (run), invalid GCL (validate);
2 bad arguments, handlers or rules; 3 the store cannot be used; 130 interrupted."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gclo", description="Run computation graphs that grow from GCL carried by "
                                "the objects in a bucket.", epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"gclo {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    p.add_argument("-q", "--quiet", action="store_true", help="log only warnings and errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    store_help = "the store: a directory, file://DIR, or memory://NAME"
    r = sub.add_parser("run", help="run the orchestrator on a store",
                       description="Watch a store, grow the graph from the GCL objects carry, and run handlers.")
    r.add_argument("--store", required=True, help=store_help)
    r.add_argument("--handlers", action="append", required=True, metavar="FILE_OR_MODULE",
                   help="a .py file or module with @handler functions (repeatable)")
    r.add_argument("--workers", type=int, metavar="N", help="worker processes (default: the core count)")
    r.add_argument("--until-idle", action="store_true",
                   help="exit once nothing is ready or running and nothing arrived for --quiet seconds")
    r.add_argument("--quiet-period", dest="quiet_s", type=float, default=1.0, metavar="SECONDS",
                   help="quiet period for --until-idle (default 1.0)")
    r.add_argument("--rules", metavar="FILE", help="YAML rules mapping key globs to GCL for files without GCL "
                   "(also read from .gclo/rules.yaml in the store)")
    r.add_argument("--events", choices=EVENT_CHOICES, default="auto",
                   help="how new objects are noticed (default auto: a filesystem watch for directories)")
    r.add_argument("--poll-interval", dest="poll_interval_s", type=float, default=1.0, metavar="SECONDS")
    r.add_argument("--executor", choices=("process", "thread"), default="process",
                   help="where handlers run (default: worker processes)")

    u = sub.add_parser("put", help="upload a file with GCL in its metadata")
    u.add_argument("local_file", help="file to upload (- for standard input)")
    u.add_argument("key", help="object key in the store")
    u.add_argument("--store", required=True, help=store_help)
    u.add_argument("--gcl", metavar="FILE_OR_TEXT", help="GCL for the computations that follow this object")

    s = sub.add_parser("status", help="show every computation and rejected spec of a store")
    s.add_argument("--store", required=True, help=store_help)
    s.add_argument("--json", action="store_true", help="print the status document as JSON")
    s.add_argument("--state", choices=[st.value for st in State], help="only computations in this state")

    v = sub.add_parser("validate", help="check GCL files; print every problem")
    v.add_argument("files", nargs="+", metavar="FILE", help="GCL files (YAML or JSON; - for standard input)")
    return p


def _configure_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
    root = logging.getLogger("gclo")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _configure_logging(args.verbose, args.quiet)
    try:
        if args.command == "run":
            return commands.run(RunSettings(
                store=args.store, handlers=args.handlers, workers=args.workers, until_idle=args.until_idle,
                rules=args.rules, events=args.events, poll_interval_s=args.poll_interval_s,
                quiet_s=args.quiet_s, executor=args.executor))
        if args.command == "put":
            return commands.put(args.local_file, args.key, args.store, args.gcl)
        if args.command == "status":
            return commands.status(args.store, args.json, args.state)
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
    except GclError as exc:
        print(f"gclo {args.command}: {exc}", file=sys.stderr)
        return commands.EXIT_FAILED
    except KeyboardInterrupt:
        return commands.EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
