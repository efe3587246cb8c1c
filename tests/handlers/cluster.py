"""Handlers the Dask executor's tests run: a fan-out whose parts record the Dask worker they ran on, some asking
for a `gpu`, some of a handler type only one worker offers, joined by a sum. Public handler API only."""
from __future__ import annotations

import os
import time

from gcl_orchestrator import handler

KINDS = ("any", "gpu", "ml", "any")  # part i is of kind KINDS[i % 4]


def _where() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().name)
    except (ImportError, ValueError):
        return "not-on-dask"


def _record(ctx, what: str) -> None:
    path = ctx.params.get("runs")
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, f"{ctx.computation} {what} {_where()}\n".encode())
        finally:
            os.close(fd)


@handler("fan")
def fan(ctx):
    """Emit `parts` parts and a join over them; params are handed down."""
    n = int(ctx.params["parts"])
    common = {k: ctx.params.get(k) for k in ("runs", "sleep")}
    parts = []
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        out = f"parts/{i:03d}.json"
        extra = {"resources": {"gpu": 1}} if kind == "gpu" else {}
        ctx.emit(computation=f"part:{i}", handler_type="ml_handler" if kind == "ml" else "part",
                 inputs=[ctx.output], output=out, params={"index": i, "kind": kind, **common}, **extra)
        parts.append(out)
    ctx.emit(computation="join", handler_type="join", inputs=parts, output="sum.json", params=common)
    _record(ctx, "done")
    return list(range(1, n + 1))


def _part(ctx):
    _record(ctx, "start")
    time.sleep(float(ctx.params.get("sleep") or 0))
    value = ctx.read_json()[int(ctx.params["index"])]
    _record(ctx, "done")
    return {"value": value * 2, "kind": ctx.params["kind"], "worker": _where()}


@handler("part")
def part(ctx):
    return _part(ctx)


@handler("ml_handler")
def ml_part(ctx):
    return _part(ctx)


@handler("join")
def join(ctx):
    parts = [ctx.read_json(k) for k in ctx.inputs]
    _record(ctx, "done")
    return {"sum": sum(p["value"] for p in parts), "parts": len(parts),
            "workers": sorted({p["worker"] for p in parts})}


@handler("waiting_parent")
def waiting_parent(ctx):
    """Submit a child and wait for its output, holding a Dask worker thread meanwhile (or seceding from it)."""
    name = ctx.params["child"]
    handle = ctx.submit(computation=name, handler_type="part", inputs=[ctx.inputs[0]], output=f"{name}.json",
                        params={"index": 0, "kind": "any", "runs": ctx.params.get("runs")})
    handle.result(timeout_s=30)
    return {"child": ctx.read_json(f"{name}.json")["value"]}
