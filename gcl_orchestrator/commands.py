"""One function per `gclo` command: settings in, exit code out. Output for people goes to stdout; logs to stderr."""
from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Sequence, TextIO

from .config import RunSettings, build_orchestrator
from .errors import ConfigError, SpecError
from .model import check_key
from .runtime import read_status, render_status
from .spec import encode_gcl, load_gcl
from .storage import open_store

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_STORE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def run(settings: RunSettings) -> int:
    orchestrator = build_orchestrator(settings)

    def stop(signum: int, _frame: object) -> None:
        orchestrator.request_stop()

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return orchestrator.run().exit_code
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def validate(files: Sequence[str], out: TextIO = sys.stdout) -> int:
    """Print every problem of every file; 0 when all are valid, 1 otherwise."""
    bad = 0
    for name in files:
        try:
            text = sys.stdin.read() if name == "-" else Path(name).read_bytes()
            specs = load_gcl(text, source=name)
        except OSError as exc:
            bad += 1
            print(f"{name}: cannot read: {exc.strerror}", file=out)
            continue
        except SpecError as exc:
            bad += 1
            for problem in exc.problems:
                print(f"{name}: {problem}", file=out)
            continue
        print(f"{name}: ok ({len(specs)} computation{'s' if len(specs) != 1 else ''}: "
              f"{', '.join(s.computation for s in specs)})", file=out)
    return EXIT_FAILED if bad else EXIT_OK


def read_gcl_argument(value: str) -> str:
    """--gcl takes a file path or the GCL text itself."""
    path = Path(value)
    if not value.lstrip().startswith(("{", "[")) and path.is_file():
        return path.read_text(encoding="utf-8")
    if len(value) < 256 and "\n" not in value and ":" not in value and not value.lstrip().startswith(("{", "[")):
        raise ConfigError(f"--gcl {value!r} is neither an existing file nor GCL text")
    return value


def put(local_file: str, key: str, store_uri: str, gcl: str | None, out: TextIO = sys.stdout) -> int:
    check_key(key)
    try:
        body = sys.stdin.buffer.read() if local_file == "-" else Path(local_file).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {local_file}: {exc.strerror}") from None
    specs = load_gcl(read_gcl_argument(gcl), source="--gcl") if gcl else ()
    encoded = encode_gcl(specs)
    store = open_store(store_uri)
    if encoded.sidecar_key:
        store.put(encoded.sidecar_key, encoded.sidecar_body or b"")
    info = store.put(key, body, encoded.metadata)
    how = f" with {len(specs)} computation(s) in its GCL" + (" (sidecar " + encoded.sidecar_key + ")"
                                                           if encoded.sidecar_key else "") if specs else ""
    print(f"put {key} ({info.size} bytes){how} into {store.describe()}", file=out)
    return EXIT_OK


def status(store_uri: str, as_json: bool, state: str | None, out: TextIO = sys.stdout) -> int:
    store = open_store(store_uri, create=False)
    doc = read_status(store)
    if doc is None:
        print(f"no status in {store.describe()}: no orchestrator has run on this store yet", file=sys.stderr)
        return EXIT_FAILED
    if as_json:
        json.dump(doc, out, indent=1)
        out.write("\n")
    else:
        print(render_status(doc, state_filter=state), file=out)
    return EXIT_OK
