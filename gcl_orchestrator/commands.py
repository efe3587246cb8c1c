"""One function per `gclo` command: settings in, exit code out. Output for people goes to stdout; logs to stderr."""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from pathlib import Path
from typing import Sequence, TextIO

from .config import DevSettings, HandlerRegistry, RunSettings, base_store, build_orchestrator, handler_sources, load_rules
from .errors import ConfigError, ObjectNotFound, SpecError, StorageError
from .model import check_key
from .runtime import tune_garbage_collection
from .sources.requests import request_cancel, request_rerun, submission_key, write_submission
from .views import (attempts_with_logs, lineage_lines, log_key, read_log, read_status, render_graph, render_status,
                    select)
from .gcl import encode_gcl, load_gcl
from .storage import is_s3_store, open_store

log = logging.getLogger("gclo")
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_STORE, EXIT_INTERRUPTED, EXIT_CLOSED_PIPE = 0, 1, 2, 3, 130, 141


def run(settings: RunSettings) -> int:
    tune_garbage_collection()
    feed = None
    if settings.api is not None:
        from .service import TOKEN_ENV, ApiServer, ChangeFeed, parse_address  # only for an API (uvicorn, Starlette)
        parse_address(settings.api)  # a bad address is refused before anything starts
        feed = ChangeFeed()
    orchestrator = build_orchestrator(settings, watcher=feed.watch if feed is not None else None)
    server = None
    if feed is not None:
        try:
            server = ApiServer(orchestrator, orchestrator.store, feed, settings.api)  # type: ignore[arg-type]
        except BaseException:
            orchestrator.executor.stop(0)
            raise
        server.start()
        token = (f"token {server.token} (set {TOKEN_ENV} to choose it)" if server.generated
                 else f"token from {TOKEN_ENV}")
        log.warning("API at %s, %s; the live page: %s/?token=%s", server.url, token, server.url,
                    server.token if server.generated else f"<the value of {TOKEN_ENV}>")

    def stop(signum: int, _frame: object) -> None:
        orchestrator.request_stop()

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return orchestrator.run().exit_code
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if server is not None:
            server.stop()


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


def put(local_file: str, key: str, store_uri: str, gcl: str | None, out: TextIO = sys.stdout,
        endpoint_url: str | None = None) -> int:
    check_key(key)
    try:
        body = sys.stdin.buffer.read() if local_file == "-" else Path(local_file).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {local_file}: {exc.strerror}") from None
    specs = load_gcl(read_gcl_argument(gcl), source="--gcl") if gcl else ()
    encoded = encode_gcl(specs)
    store = open_store(store_uri, endpoint_url=endpoint_url)
    encoded.write_sidecar(store)
    info = store.put(key, body, encoded.metadata)
    how = f" with {len(specs)} computation(s) in its GCL" + (" (sidecar " + encoded.sidecar_key + ")"
                                                           if encoded.sidecar_key else "") if specs else ""
    print(f"put {key} ({info.size} bytes){how} into {store.describe()}", file=out)
    return EXIT_OK


def status(store_uri: str, as_json: bool, state: str | None, out: TextIO = sys.stdout,
           endpoint_url: str | None = None) -> int:
    store = open_store(store_uri, create=False, endpoint_url=endpoint_url)
    doc = read_status(store, None if state is None else [state])
    if doc is None:
        print(f"no status in {store.describe()}: no orchestrator has run on this store yet", file=sys.stderr)
        return EXIT_FAILED
    if as_json:
        json.dump(doc, out, indent=1)
        out.write("\n")
    else:
        print(render_status(doc, state_filter=state), file=out)
    return EXIT_OK


def graph(store_uri: str, fmt: str, out: TextIO = sys.stdout, endpoint_url: str | None = None, *,
          state: str | None = None, around: str | None = None, limit: int | None = None) -> int:
    store = open_store(store_uri, create=False, endpoint_url=endpoint_url)
    doc = read_status(store, None if state is None else [state])
    if doc is None:
        print(f"no status in {store.describe()}: no orchestrator has run on this store yet", file=sys.stderr)
        return EXIT_FAILED
    cut, matched = select(doc, state=state, around=around, limit=limit)
    if around is not None and not matched:
        print(f"gclo graph: no computation reads, writes or is named {around!r}", file=sys.stderr)
        return EXIT_FAILED
    shown = len(cut["computations"])
    if shown < matched:
        print(f"gclo graph: drawing {shown:,} of {matched:,} computations (--limit N, 0 for all; --state; "
              "--around KEY)", file=sys.stderr)
    out.write(render_graph(cut, fmt))
    return EXIT_OK


def lineage(store_uri: str, key: str, out: TextIO = sys.stdout, endpoint_url: str | None = None) -> int:
    """Print what `key` was computed from, and whether each part is current; 1 if any part is not."""
    store = open_store(store_uri, create=False, endpoint_url=endpoint_url)
    try:
        store.head(check_key(key))
    except ObjectNotFound:
        print(f"no object at {key!r} in {store.describe()}", file=sys.stderr)
        return EXIT_FAILED
    lines = lineage_lines(store, key)
    print("\n".join(lines), file=out)
    return EXIT_FAILED if any("CHANGED since" in line or "deleted since" in line for line in lines) else EXIT_OK


def logs(store_uri: str, computation: str, attempt: int | None = None, out: TextIO = sys.stdout,
         endpoint_url: str | None = None) -> int:
    """Print the log of one attempt of a computation (the latest that has one by default) under a header line
    naming it; 1 when there is none."""
    store = open_store(store_uri, create=False, endpoint_url=endpoint_url)
    attempts = attempts_with_logs(store, computation) if attempt is None else []
    chosen = attempt if attempt is not None else attempts[-1] if attempts else None
    found = None if chosen is None else read_log(store, computation, chosen)
    if found is None:
        others = attempts if attempt is None else attempts_with_logs(store, computation)
        why = (f"attempts with a log: {', '.join(map(str, others))}" if others else
               "it has not run there, or its handler wrote nothing (no ctx.log line, no output, no error)")
        which = f"attempt {attempt} of " if attempt is not None else ""
        print(f"no log for {which}computation {computation!r} in {store.describe()}: {why}", file=sys.stderr)
        return EXIT_FAILED
    number, text = found
    more = f"; attempts with a log: {', '.join(map(str, attempts))}" if len(attempts) > 1 else ""
    print(f"# log of computation {computation!r}, attempt {number} ({log_key(computation, number)}{more})", file=out)
    out.write(text if not text or text.endswith("\n") else text + "\n")
    return EXIT_OK


def rerun(store_uri: str, target: str, downstream: bool, out: TextIO = sys.stdout,
          endpoint_url: str | None = None) -> int:
    """Ask the orchestrator running on the store to run a computation (or the producer of a key) again."""
    store = open_store(store_uri, create=False, endpoint_url=endpoint_url)
    key = request_rerun(store, target, downstream, by=f"gclo rerun on {socket.gethostname()} (pid {os.getpid()})")
    doc = read_status(store, states=())  # the summary says whether an orchestrator runs
    orch = (doc or {}).get("orchestrator", {})
    if orch.get("state") in ("starting", "running"):
        where = (f"the orchestrator running on this store (pid {orch.get('pid')} on {orch.get('host')}) picks it up "
                 "within seconds; should it have stopped, the next `gclo run` will")
    else:
        where = "no orchestrator runs on this store now: the next `gclo run` picks it up"
    print(f"asked for a rerun of {target!r}{' and everything downstream of it' if downstream else ''} ({key}); "
          f"{where}", file=out)
    known = (doc or {}).get("computations")
    if known and not any(target in (c.get("computation"), c.get("output")) for c in known):
        print(f"note: the last status of this store names no computation and no output {target!r}; unless it "
              "is declared by then, the orchestrator refuses the request (see `gclo status`, rejected)",
              file=sys.stderr)
    return EXIT_OK


def submit(file: str, api_url: str | None, token: str | None, store_uri: str | None,
           out: TextIO = sys.stdout, endpoint_url: str | None = None) -> int:
    """Hand a GCL document to the orchestrator: through its HTTP API when one is named (the answer says each
    computation's state, or every problem), else into the store (`submitted/`), where it is picked up."""
    try:
        text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {file}: {getattr(exc, 'strerror', None) or exc}") from None
    from .service.client import URL_ENV, ApiClient
    client = ApiClient.from_options(api_url, token)
    if client is None and store_uri is None:
        raise ConfigError(f"say where: --api HOST:PORT (or {URL_ENV}) for a running orchestrator's API, or "
                          "--store for its store")
    if client is not None:
        code, doc = client.request("POST", "/v1/specs", text.encode("utf-8"))
        if code == 202:
            print(f"submitted {len(doc['computations'])} computation(s) through the API at {client.url} "
                  f"(kept at {doc['source']}):", file=out)
            for item in doc["computations"]:
                print(f"  {item['computation']}: {item['state']}" + (f" ({item['reason']})" if "reason" in item
                                                                      else ""), file=out)
            return EXIT_OK
        print(f"{file}: {doc.get('error', f'HTTP {code}') if isinstance(doc, dict) else f'HTTP {code}'}", file=out)
        for problem in (doc.get("problems", []) if isinstance(doc, dict) else []):
            print(f"{file}: {problem}", file=out)
        return EXIT_USAGE if code in (401, 413) else EXIT_FAILED
    try:
        specs = load_gcl(text, source=file)
    except SpecError as exc:
        for problem in exc.problems:
            print(f"{file}: {problem}", file=out)
        return EXIT_FAILED
    store = open_store(store_uri, create=False, endpoint_url=endpoint_url)  # type: ignore[arg-type]
    key = submission_key()
    write_submission(store, key, text, specs)
    print(f"submitted {len(specs)} computation(s) into the store {store.describe()} at {key}: the orchestrator "
          "running on it takes them up (no API was named, so their states are not known yet; gclo status shows "
          "them)", file=out)
    return EXIT_OK


def cancel(target: str, api_url: str | None, token: str | None, store_uri: str | None, out: TextIO = sys.stdout,
           endpoint_url: str | None = None) -> int:
    """Stop a computation: through the HTTP API when one is named (the answer is immediate), else by a
    request left in the store for the orchestrator running on it."""
    from .service.client import URL_ENV, ApiClient
    client = ApiClient.from_options(api_url, token)
    if client is None and store_uri is None:
        raise ConfigError(f"say where: --api HOST:PORT (or {URL_ENV}) for a running orchestrator's API, or "
                          "--store for its store")
    if client is not None:
        code, doc = client.request("POST", client.computation_path(target, "cancel"))
        if code == 200:
            print(f"cancelled {doc['computation']} (it was {doc['was']}) through the API at {client.url}",
                  file=out)
            return EXIT_OK
        print(f"gclo cancel: {doc.get('error') if isinstance(doc, dict) else f'HTTP {code}'}", file=sys.stderr)
        return EXIT_USAGE if code == 401 else EXIT_FAILED
    store = open_store(store_uri, create=False, endpoint_url=endpoint_url)  # type: ignore[arg-type]
    key = request_cancel(store, target, f"gclo cancel on {socket.gethostname()}")
    print(f"asked the orchestrator on {store.describe()} to cancel {target} (request {key}); it fails as "
          "cancelled when the orchestrator reads the request (gclo status shows it)", file=out)
    return EXIT_OK


def setup_events(store_uri: str, queue: str, endpoint_url: str | None = None, out: TextIO = sys.stdout) -> int:
    """Create the SQS queue and the bucket notification that feeds it (safe to run again)."""
    import boto3
    import botocore.exceptions

    from .sources.s3_notifications import MAX_RECEIVES, ensure_notifications

    store = base_store(open_store(store_uri, endpoint_url=endpoint_url))
    if not is_s3_store(store):
        raise ConfigError("setup-events needs an s3:// store")
    store.server()  # the bucket exists and the credentials work, or one clear error
    sqs = boto3.session.Session().client("sqs", endpoint_url=store.explicit_endpoint)
    try:
        result = ensure_notifications(store.client, sqs, store.bucket, queue, store.prefix)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        raise StorageError(f"setting up notifications for bucket {store.bucket!r} failed: {exc}") from None
    print(f"bucket {store.bucket!r} now sends object-created events"
          f"{' under ' + repr(store.prefix) if store.prefix else ''} to {result['queue_url']}", file=out)
    print(f"messages received {MAX_RECEIVES} times without being handled go to {result['dead_letter_url']}",
          file=out)
    print(f"run with: gclo run --store {store_uri} --sqs-queue {queue} --handlers ...", file=out)
    return EXIT_OK


def dev(settings: DevSettings, out: TextIO = sys.stdout) -> int:
    """Start SeaweedFS on 127.0.0.1 with generated credentials, create the bucket, run the orchestrator on it,
    and stop everything it started when the run ends or on Ctrl-C."""
    from .devservers import SeaweedFS  # boto3, for the bucket
    sources = handler_sources(settings.handlers)
    HandlerRegistry.from_sources(sources)  # fail on a broken handler file before starting any server
    load_rules(settings.rules)
    for local, _key in settings.puts:
        if not Path(local).is_file():
            raise ConfigError(f"--put {local}: no such file")
    temp_dir = None if settings.data_dir else tempfile.mkdtemp(prefix="gclo-dev-")
    server = SeaweedFS.prepare(settings.data_dir or temp_dir, settings.s3_port)  # type: ignore[arg-type]
    try:
        server.start()
        server.create_bucket(settings.bucket)
        os.environ.update(server.credentials_env())  # for this process and the worker processes
        store_uri = f"s3://{settings.bucket}?endpoint_url={server.endpoint}"
        print(f"gclo dev: SeaweedFS S3 at {server.endpoint} (pid {server.pid}), bucket {settings.bucket!r}, "
              f"data in {server.data_dir}", file=out)
        print("  to drop files from another shell:", file=out)
        print(f"    export AWS_ACCESS_KEY_ID={server.access_key} AWS_SECRET_ACCESS_KEY={server.secret_key} "
              f"AWS_ENDPOINT_URL={server.endpoint}", file=out)
        print(f"    aws s3 cp data.csv s3://{settings.bucket}/incoming/data.csv", file=out)
        print(f"    gclo put data.csv incoming/data.csv --store s3://{settings.bucket} --gcl step.json", file=out)
        out.flush()
        store = open_store(store_uri)
        for local, key in settings.puts:
            info = store.put(check_key(key), Path(local).read_bytes())
            print(f"put {key} ({info.size} bytes)", file=out)
        out.flush()
        code = run(RunSettings(store=store_uri, handlers=sources, workers=settings.workers,
                               until_idle=settings.until_idle, rules=settings.rules, events="seaweedfs",
                               filer=server.filer, quiet_s=settings.quiet_s, executor=settings.executor,
                               api=settings.api))
        if settings.until_idle:
            doc = read_status(store)
            if doc is not None:
                print("\n" + render_status(doc), file=out)
        for key in settings.show:
            try:
                print(f"\n{store.get(key).body.decode('utf-8', 'replace')}", file=out)
            except ObjectNotFound:
                print(f"gclo dev: --show {key}: no such object", file=sys.stderr)
                code = code or EXIT_FAILED
        return code
    finally:
        server.stop()
        if temp_dir:
            shutil.rmtree(temp_dir, ignore_errors=True)
