"""The workload of the fault suite: a fan-out/fan-in whose shape grows from a result, and files dropped by a user.
Handlers keep no books of their own: the audit trail ($GCLO_AUDIT_LOG) is what the suite counts."""
from __future__ import annotations

import time

from gcl_orchestrator import handler


@handler("split")
def split(ctx):
    """One `double` per number in the input, then a `total` over all of them."""
    numbers = [int(x) for x in ctx.read_text().split()]
    parts = []
    for i in range(len(numbers)):
        out = f"parts/{i:03d}.json"
        ctx.emit(computation=f"double:{i:03d}", handler_type="double", inputs=[ctx.output], output=out,
                 params={"index": i, "sleep": ctx.params.get("sleep", 0)})
        parts.append(out)
    ctx.emit(computation="total", handler_type="total", inputs=parts, output="total.json")
    return numbers


@handler("double")
def double(ctx):
    time.sleep(ctx.params.get("sleep") or 0)  # a window for faults to land in
    return ctx.read_json()[ctx.params["index"]] * 2


@handler("total")
def total(ctx):
    return {"sum": sum(ctx.read_json(k) for k in ctx.inputs), "parts": len(ctx.inputs)}


@handler("square")
def square(ctx):
    n = int(ctx.read_text())
    time.sleep(ctx.params.get("sleep") or 0)
    return {"n": n, "square": n * n}
