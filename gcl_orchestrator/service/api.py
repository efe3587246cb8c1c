"""The HTTP API (Starlette): submit GCL and hear what came of it, read computations and the graph, cancel and
rerun, follow every state change as server-sent events, scrape metrics, and the live page at `/`.

It runs beside the orchestrator loop and never blocks it: the graph is read, and events handed to the core,
by short calls on the loop's thread (`Orchestrator.call`); the store (submissions, logs, lineage) is read and
written on the API's own threads. Every request needs the token, as `Authorization: Bearer TOKEN`, or the
cookie that opening the page with `/?token=TOKEN` sets.
"""
from __future__ import annotations

import asyncio
import hmac
import itertools
import json
import logging
from pathlib import Path
from typing import Any, Awaitable, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .. import jsonbytes
from ..core.scheduler import FINAL
from ..errors import GclError, SpecError
from ..gcl import load_gcl, specs_to_text
from ..gcl.loader import MAX_TEXT_BYTES
from ..interfaces import ObjectStore
from ..model import CancelRequested, RerunRequested, SpecsSubmitted, State
from ..runtime import Orchestrator
from ..runtime.orchestrator import LoopStopped
from ..sources.requests import submission_key, write_submission
from ..views import DEFAULT_LIMIT, lineage_lines, render_graph, select
from ..views.logs import attempts_with_logs, read_log, tail
from ..views.status import computation_item
from .feed import SHOWN_INPUTS, ChangeFeed
from .metrics import CONTENT_TYPE, Metrics
from .openapi import openapi_document

log = logging.getLogger("gclo.api")
PAGE_DIR = Path(__file__).parent / "page"
COOKIE = "gclo_token"
CALL_TIMEOUT_S = 10.0
MAX_PAGE = 1_000  # computations per page of /v1/computations
MAX_SCAN = 200_000  # records one page may look through before it answers with a cursor (bounds the loop's time)
COALESCE_S = 0.02  # an event stream sends at most this often
LOG_TAIL_LINES = 50
STATES = [s.value for s in State]
PAGE_FILES = {"page.js": "text/javascript; charset=utf-8", "page.css": "text/css; charset=utf-8"}


class ApiError(Exception):
    def __init__(self, status: int, message: str, **extra: Any):
        super().__init__(message)
        self.status, self.message, self.extra = status, message, extra


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


class TokenGuard:
    """Refuses every request without the token (401), compared in constant time."""

    def __init__(self, app: ASGIApp, token: str):
        self.app = app
        self._token = token.encode()

    def _ok(self, value: str | None) -> bool:
        return value is not None and hmac.compare_digest(value.encode(), self._token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        header = request.headers.get("authorization", "")
        scheme, _, credentials = header.partition(" ")
        if (scheme.lower() == "bearer" and self._ok(credentials.strip())) or self._ok(request.cookies.get(COOKIE)):
            await self.app(scope, receive, send)
            return
        if scope["path"] == "/" and self._ok(request.query_params.get("token")):
            # Opening the page with its token: the cookie carries it from now on, and the address bar loses it.
            response: Response = RedirectResponse("/", status_code=303)
            response.set_cookie(COOKIE, self._token.decode(), httponly=True, samesite="strict")
        else:
            why = "a wrong token" if header or request.cookies.get(COOKIE) else "no token"
            response = JSONResponse({"error": f"unauthorized: {why}; send Authorization: Bearer TOKEN (the token "
                                              "gclo printed at start, or GCLO_API_TOKEN)"}, status_code=401,
                                    headers={"WWW-Authenticate": "Bearer"})
        await response(scope, receive, send)


def make_app(orchestrator: Orchestrator, store: ObjectStore, feed: ChangeFeed, metrics: Metrics, token: str, *,
             max_body: int = MAX_TEXT_BYTES, closing: asyncio.Event | None = None) -> ASGIApp:
    """The API over one running orchestrator. `closing`, when set, ends the event streams (at shutdown)."""
    core = orchestrator.core

    async def on_loop(fn: Callable[[], Any]) -> Any:
        future = orchestrator.call(fn)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), CALL_TIMEOUT_S)
        except asyncio.TimeoutError:
            future.cancel()
            raise ApiError(503, f"the orchestrator did not answer within {CALL_TIMEOUT_S:g}s (starting, stopping "
                                "or busy); try again") from None
        except LoopStopped:
            raise ApiError(503, "the orchestrator has stopped") from None

    def handled(endpoint: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            try:
                return await endpoint(request)
            except ApiError as exc:
                return _error(exc.status, exc.message, **exc.extra)
        return run

    find = orchestrator.named  # on the loop: a computation, or the one producing a key of that name

    def brief(rec: Any) -> dict[str, Any]:
        item = computation_item(rec)
        inputs = item["inputs"]
        if len(inputs) > SHOWN_INPUTS:
            item["inputs"] = inputs[:SHOWN_INPUTS]
            item["inputs_count"] = len(inputs)
        return item

    def int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
        text = request.query_params.get(name)
        if text is None:
            return default
        try:
            value = int(text)
        except ValueError:
            raise ApiError(400, f"{name} must be a whole number, not {text[:40]!r}") from None
        if not low <= value <= high:
            raise ApiError(400, f"{name} must be between {low} and {high}, not {value}")
        return value

    def state_param(request: Request) -> str | None:
        state = request.query_params.get("state")
        if state is not None and state not in STATES:
            raise ApiError(400, f"state must be one of {', '.join(STATES)}, not {state[:40]!r}")
        return state

    # --- endpoints ---------------------------------------------------------------------------------------------

    async def page(request: Request) -> Response:
        return Response((PAGE_DIR / "index.html").read_bytes(), media_type="text/html; charset=utf-8",
                        headers={"Cache-Control": "no-store"})

    async def page_file(request: Request) -> Response:
        name = request.path_params["file"]
        if name not in PAGE_FILES:
            raise ApiError(404, f"no page file {name[:60]!r}")
        return Response((PAGE_DIR / name).read_bytes(), media_type=PAGE_FILES[name],
                        headers={"Cache-Control": "no-store"})

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_document())

    async def status(request: Request) -> Response:
        def read() -> dict[str, Any]:
            return {"orchestrator": orchestrator.info, "counts": {s.value: n for s, n in core.counts().items()},
                    "computations": len(core), "last_event_id": feed.last_id}
        return JSONResponse(await on_loop(read))

    async def submit(request: Request) -> Response:
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_body:
                raise ApiError(413, f"the body is larger than {max_body:,} bytes, the limit of one GCL document")
        try:
            specs = load_gcl(bytes(body), source="the request body")
        except SpecError as exc:
            return _error(400, f"invalid GCL ({len(exc.problems)} problem{'s' if len(exc.problems) != 1 else ''})",
                          problems=[str(p) for p in exc.problems])
        if not specs:
            raise ApiError(400, "the document declares no computation", problems=["(document): no computation"])
        key = submission_key()

        def check() -> tuple[list[tuple[str, str]], str | None, list[dict[str, Any]]]:
            records = [core.record(spec.computation) for spec in specs]
            if all(r is not None and r.spec == spec and r.state is not State.RETIRED
                   for r, spec in zip(records, specs)):  # the same document again: kept already, nothing to write
                return [], records[0].source, [{"computation": r.name, "state": r.state.value} for r in records]
            return core.refusals(key, specs), None, []
        refused, kept_at, answer = await on_loop(check)
        if kept_at is not None:
            return JSONResponse({"source": kept_at, "computations": answer}, status_code=202)
        if refused:
            return _error(400, f"refused ({len(refused)} problem{'s' if len(refused) != 1 else ''}); nothing was "
                               "registered", problems=[f"{name}: {reason}" for name, reason in refused])
        text = bytes(body).decode("utf-8")
        try:  # kept as an object first: what was accepted survives a restart
            await asyncio.to_thread(write_submission, store, key, text, specs)
        except (GclError, ValueError) as exc:
            raise ApiError(503, f"could not keep the submission in the store at {key!r}: {exc}") from None

        def register() -> list[dict[str, Any]]:
            orchestrator.feed([SpecsSubmitted(key, specs)])
            answer = []
            for spec in specs:
                rec = core.record(spec.computation)
                if rec is not None and rec.spec == spec:
                    answer.append({"computation": spec.computation, "state": rec.state.value})
                else:
                    why = next((r.reason for r in reversed(core.rejections) if r.computation == spec.computation),
                               "refused")
                    answer.append({"computation": spec.computation, "state": "rejected", "reason": why})
            return answer

        answer = await on_loop(register)
        log.info("submitted %d computation(s) through the API, kept at %s", len(specs), key)
        return JSONResponse({"source": key, "computations": answer}, status_code=202)

    async def computations(request: Request) -> Response:
        state = state_param(request)
        handler_type = request.query_params.get("handler_type")
        prefix = request.query_params.get("prefix", "")
        limit = int_param(request, "limit", 100, 1, MAX_PAGE)
        cursor = int_param(request, "cursor", 0, 0, 1 << 40)

        def read() -> dict[str, Any]:
            items, position = [], cursor
            for rec in itertools.islice(core.records(), cursor, cursor + MAX_SCAN):
                position += 1
                if ((state is None or rec.state.value == state)
                        and (handler_type is None or rec.spec.handler_type == handler_type)
                        and rec.spec.computation.startswith(prefix)):
                    items.append(brief(rec))
                    if len(items) >= limit:
                        break
            return {"computations": items, "next_cursor": position if position < len(core) else None,
                    "total": len(core)}
        return JSONResponse(await on_loop(read))

    async def computation(request: Request) -> Response:
        name = request.path_params["name"]

        def read() -> dict[str, Any] | None:
            rec = find(name)
            if rec is None:
                return None
            item = brief(rec)
            item["spec"] = json.loads(specs_to_text([rec.spec]))
            if len(rec.spec.inputs) > SHOWN_INPUTS:  # a join over 100,000 parts: its first ones and the count
                item["spec"]["inputs"] = item["inputs"]
            item["times"] = {"registered": rec.registered_at, "ready": rec.ready_at, "started": rec.started_at,
                             "finished": rec.finished_at}
            item["errors"] = list(rec.errors[-20:])
            item["running_attempt"] = rec.running_attempt
            return item
        item = await on_loop(read)
        if item is None:
            raise ApiError(404, f"no computation {name!r}, and none produces a key of that name")
        item["attempt_logs"], item["log_tail"] = await asyncio.to_thread(_logs_and_lineage, store, item)
        return JSONResponse(item)

    async def cancel(request: Request) -> Response:
        name = request.path_params["name"]
        who = f"API, {request.client.host if request.client else 'client'}"

        def act() -> tuple[int, dict[str, Any]]:
            rec = find(name)
            if rec is None:
                return 404, {"error": f"no computation {name!r} to cancel, and none produces a key of that name"}
            if rec.state in FINAL:
                return 409, {"error": f"computation {rec.name!r} is {rec.state.value} already: nothing to cancel",
                             "computation": rec.name, "state": rec.state.value}
            was = rec.state.value
            orchestrator.feed([orchestrator.requested(CancelRequested(rec.name, who))])
            return 200, {"computation": rec.name, "was": was, "state": rec.state.value}
        code, doc = await on_loop(act)
        return JSONResponse(doc, status_code=code)

    async def rerun(request: Request) -> Response:
        name = request.path_params["name"]
        downstream = request.query_params.get("downstream", "false").lower() in ("1", "true", "yes")
        who = f"API, {request.client.host if request.client else 'client'}"

        def act() -> tuple[int, dict[str, Any]]:
            rec = find(name)
            if rec is None:
                return 404, {"error": f"no computation {name!r} to run again, and none produces a key of that "
                                      "name"}
            orchestrator.feed([orchestrator.requested(RerunRequested(rec.name, downstream, who))])
            return 202, {"computation": rec.name, "state": rec.state.value, "downstream": downstream}
        code, doc = await on_loop(act)
        return JSONResponse(doc, status_code=code)

    async def graph(request: Request) -> Response:
        fmt = request.query_params.get("format", "json")
        if fmt not in ("json", "dot", "mermaid"):
            raise ApiError(400, f"format must be json, dot or mermaid, not {fmt[:40]!r}")
        state = state_param(request)
        around = request.query_params.get("around")
        limit = int_param(request, "limit", DEFAULT_LIMIT, 0, 1_000_000)

        def read() -> tuple[list[dict[str, Any]], int]:
            if around is None:  # no need to look past the limit but to count
                items, matched = [], 0
                for rec in core.records():
                    if state is None or rec.state.value == state:
                        matched += 1
                        if not limit or matched <= limit:
                            items.append(brief(rec))
                return items, matched
            return [brief(rec) for rec in core.records()], 0
        items, matched = await on_loop(read)
        doc: dict[str, Any] = {"computations": items}
        if around is not None:
            doc, matched = select(doc, state, around, limit=limit or None)
        text = render_graph(doc, fmt)
        media = "application/json" if fmt == "json" else "text/plain; charset=utf-8"
        return Response(text, media_type=media, headers={"X-Gclo-Matched": str(matched),
                                                         "X-Gclo-Shown": str(len(doc["computations"]))})

    async def events(request: Request) -> Response:
        last = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()

        def waker() -> None:  # on the orchestrator's loop thread: one wake-up however many batches come
            if not wake.is_set():
                loop.call_soon_threadsafe(wake.set)

        async def stream():  # type: ignore[no-untyped-def]
            feed.add_waker(waker)
            try:
                cursor = last or feed.last_id
                sent_at = 0.0  # the loop's clock when changes last went out
                yield f"retry: 1000\n: connected to run {feed.run}\n\n"
                while closing is None or not closing.is_set():
                    wake.clear()
                    changes, reset = feed.after(cursor)
                    if reset:
                        cursor = feed.last_id
                        yield (f"id: {cursor}\nevent: reset\ndata: " + json.dumps(
                            {"reason": "events since your last one are no longer kept (or are of an earlier "
                                       "run): reload the graph", "last_event_id": cursor}) + "\n\n")
                        continue
                    if changes:
                        # One message for what is sent at once, its id the last change's: resuming from it
                        # resumes after all of them, as a browser's EventSource hands a message over whole
                        cursor = f"{feed.run}.{changes[-1].seq}"
                        yield b"id: %s\nevent: states\ndata: %s\n\n" % (
                            cursor.encode(), jsonbytes.dumps([c.event() for c in changes]))
                        sent_at = loop.time()
                        continue
                    try:
                        await asyncio.wait_for(wake.wait(), 15.0)
                    except asyncio.TimeoutError:
                        yield ": still here\n\n"
                        continue
                    # A change after a quiet spell goes out at once; in a busy graph what comes within
                    # COALESCE_S of the last write goes out in the next one, so a stream costs the orchestrator's
                    # process at most a wake-up per COALESCE_S, not one per batch of its loop.
                    pause = COALESCE_S - (loop.time() - sent_at)
                    if pause > 0:
                        await asyncio.sleep(pause)
            finally:
                feed.remove_waker(waker)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def scrape(request: Request) -> Response:
        def read() -> dict[str, Any]:
            return {"counts": {s.value: n for s, n in core.counts().items()}, "queue": orchestrator.queue.size(),
                    "slots": core.slots, "incidents": orchestrator.incident_total,
                    "rejected": len(core.rejections), "store_calls": dict(store.calls_by_kind())}
        snapshot = await on_loop(read)
        return Response(metrics.render(snapshot), media_type=CONTENT_TYPE)

    routes = [
        Route("/", handled(page)),
        Route("/page/{file}", handled(page_file)),
        Route("/openapi.json", handled(openapi)),
        Route("/metrics", handled(scrape)),
        Route("/v1/status", handled(status)),
        Route("/v1/specs", handled(submit), methods=["POST"]),
        Route("/v1/computations", handled(computations)),
        Route("/v1/computations/{name:path}/cancel", handled(cancel), methods=["POST"]),
        Route("/v1/computations/{name:path}/rerun", handled(rerun), methods=["POST"]),
        Route("/v1/computations/{name:path}", handled(computation)),
        Route("/v1/graph", handled(graph)),
        Route("/v1/events", handled(events)),
    ]
    async def http_error(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)
        what = {404: f"no such path: {request.url.path[:200]}",
                405: f"{request.method} is not allowed on {request.url.path[:200]}"}.get(status, str(exc))
        response = _error(status, what)
        response.headers.update(getattr(exc, "headers", None) or {})  # 405's Allow
        return response

    return TokenGuard(Starlette(routes=routes, exception_handlers={HTTPException: http_error}), token)


def _logs_and_lineage(store: ObjectStore, item: dict[str, Any]) -> tuple[list[int], str | None]:
    """Off the loop: which attempts have a log, the tail of the latest one; the output's direct lineage."""
    name = item["computation"]
    try:
        attempts = attempts_with_logs(store, name)
        latest = read_log(store, name, attempts[-1]) if attempts else None
        if item["state"] == State.DONE.value:
            item["lineage"] = lineage_lines(store, item["output"], max_depth=1)
    except GclError as exc:
        item["store_error"] = str(exc)
        return [], None
    return attempts, tail(latest[1], LOG_TAIL_LINES) if latest else None
