"""Handlers the tests run: branching, fan-out/fan-in, failures of every kind. Public handler API only."""
from __future__ import annotations

import os
import time

from gcl_orchestrator import PermanentHandlerError, handler


def _count(ctx):
    """Record one execution in the file named by params['runs'] (O_APPEND: safe across processes)."""
    path = ctx.params.get("runs")
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, f"{ctx.computation}\n".encode())
        finally:
            os.close(fd)


@handler("split")
def split(ctx):
    """Fan out one `double` per number in the input, and a `total` that joins them all."""
    _count(ctx)
    numbers = [int(x) for x in ctx.read_text().split()]
    parts = []
    for i, n in enumerate(numbers):
        out = f"parts/{i:03d}.json"
        ctx.emit(computation=f"double:{i}", handler_type="double", inputs=[ctx.output], output=out,
                 params={"index": i, "runs": ctx.params.get("runs"), "sleep": ctx.params.get("sleep", 0)})
        parts.append(out)
    ctx.emit(computation="total", handler_type="total", inputs=parts, output="total.json",
             params={"runs": ctx.params.get("runs")})
    return numbers


@handler("split_range")
def split_range(ctx):
    """Fan out one `double` per number in the input, and a `total` over params['count'] parts (all of them by
    default) declared as one range of keys."""
    _count(ctx)
    numbers = [int(x) for x in ctx.read_text().split()]
    for i in range(len(numbers)):
        ctx.emit(computation=f"double:{i}", handler_type="double", inputs=[ctx.output], output=f"parts/{i:05d}.json",
                 params={"index": i, "runs": ctx.params.get("runs")})
    ctx.emit(computation="total", handler_type="total", output="total.json", params={"runs": ctx.params.get("runs")},
             inputs=[{"pattern": "parts/{i:05d}.json", "count": ctx.params.get("count", len(numbers))}])
    return numbers


@handler("declare_join")
def declare_join(ctx):
    """Declare one `total` over params['count'] parts `parts/NNNNNN.json`, as a range of keys (params['form']
    "range") or as the list of them ("list"), and nothing that produces them."""
    n = ctx.params["count"]
    if ctx.params["form"] == "range":
        inputs = [{"pattern": "parts/{i:06d}.json", "count": n}]
    else:
        inputs = [f"parts/{i:06d}.json" for i in range(n)]
    ctx.emit(computation="total", handler_type="total", inputs=inputs, output="total.json")
    return n


@handler("double")
def double(ctx):
    _count(ctx)
    time.sleep(ctx.params.get("sleep") or 0)
    return ctx.read_json()[ctx.params["index"]] * 2


@handler("total")
def total(ctx):
    _count(ctx)
    return {"sum": sum(ctx.read_json(k) for k in ctx.inputs), "parts": len(ctx.inputs)}


@handler("classify")
def classify(ctx):
    """The result picks the branch: even numbers go one way, odd ones the other."""
    n = int(ctx.read_text())
    branch = "even" if n % 2 == 0 else "odd"
    ctx.emit(computation=f"{branch}-branch", handler_type=branch, inputs=[ctx.output], output=f"{branch}.txt")
    return {"n": n, "branch": branch}


@handler("even")
def even(ctx):
    return "took the even branch"


@handler("odd")
def odd(ctx):
    return "took the odd branch"


@handler("echo")
def echo(ctx):
    _count(ctx)
    return ctx.read_bytes(ctx.inputs[0]) if ctx.inputs else b""


@handler("fail")
def fail(ctx):
    raise ValueError(f"bad value in {ctx.inputs[0]}")


@handler("give_up")
def give_up(ctx):
    raise PermanentHandlerError("the input can never work")


@handler("crash")
def crash(ctx):
    os._exit(3)


@handler("hang")
def hang(ctx):
    time.sleep(3600)


@handler("bad_emit")
def bad_emit(ctx):
    ctx.emit(computation="oops", handler_type="echo", inputs=["../etc/passwd"], output="x")


@handler("read_other")
def read_other(ctx):
    return ctx.read_bytes("not/an/input")


@handler("returns_object")
def returns_object(ctx):
    return object()


@handler("emit_cycle")
def emit_cycle(ctx):
    ctx.emit(computation="loop-back", handler_type="echo", inputs=[ctx.output], output=ctx.inputs[0])
    return "x"


@handler("flaky")
def flaky(ctx):
    """Fails until attempt params['succeed_on']."""
    _count(ctx)
    if ctx.attempt < ctx.params["succeed_on"]:
        raise RuntimeError(f"transient trouble on attempt {ctx.attempt}")
    return f"succeeded on attempt {ctx.attempt}"


@handler("fallback")
def fallback(ctx):
    return "from the fallback"


@handler("follow_children")
def follow_children(ctx):
    """Emits two children and asks to be told when they end."""
    ctx.notify_on_completion()
    for name in ("child-ok", "child-bad"):
        ctx.emit(computation=name, handler_type="echo" if name == "child-ok" else "fail", inputs=[ctx.output],
                 output=f"{name}.out")
    return "parent"


def _append_completion(completion):
    path = os.environ.get("GCLO_TEST_COMPLETIONS")
    if path:
        with open(path, "a") as fh:
            fh.write(f"{completion.computation} {completion.state.value} {completion.attempts} "
                     f"{completion.produced_by}\n")


@handler.on_complete("audit")
def audit(completion):
    _append_completion(completion)


@handler.on_complete("follow_children")
def children_done(completion):
    _append_completion(completion)


@handler("parent_waits")
def parent_waits(ctx):
    """Submits a child and waits for its output while holding a worker slot."""
    child = ctx.submit(computation=f"child-of-{ctx.computation}", handler_type="echo", inputs=[ctx.inputs[0]],
                       output=f"{ctx.computation}.child")
    ctx.wait_for(child.output, timeout_s=60)
    return b"parent saw: " + ctx.read_bytes(child.output)


@handler("chatty")
def chatty(ctx):
    """Writes to stdout, stderr and ctx.log, then fails on its first attempt."""
    print(f"printed by {ctx.computation}")
    print("a warning on stderr", file=__import__("sys").stderr)
    ctx.log.info("logged through ctx.log, attempt %d", ctx.attempt)
    if ctx.attempt == 1:
        raise ValueError("the first attempt always fails")
    return b"ok"


@handler("fan_wide")
def fan_wide(ctx):
    """Emits params['n'] computations, each also needing params['gate'] (a key dropped later, or never)."""
    n = ctx.params["n"]
    for i in range(n):
        ctx.emit(computation=f"wide:{i}", handler_type="echo", inputs=[ctx.output, ctx.params["gate"]],
                 output=f"wide/{i:05d}")
    return {"emitted": n}


@handler("submit_failing_child")
def submit_failing_child(ctx):
    """Submits a child that fails and reports what result() raised."""
    from gcl_orchestrator import WaitFailed

    child = ctx.submit(computation=f"failing-child-of-{ctx.computation}", handler_type="fail",
                       inputs=[ctx.inputs[0]], output=f"{ctx.computation}.child")
    assert child.accepted, child.errors
    try:
        child.result(timeout_s=60)
    except WaitFailed as exc:
        return {"child": child.computation, "raised": type(exc).__name__, "message": str(exc)}
    return {"child": child.computation, "raised": None}


@handler("submit_rejected")
def submit_rejected(ctx):
    """Submits a computation whose output is already taken, and one with an invalid field."""
    taken = ctx.submit(computation="thief", handler_type="echo", inputs=[], output=ctx.output)
    invalid = ctx.submit(computation="bad", handler_type="echo", inputs=[], output="x", priority="soon")
    return {"taken": [taken.status, list(taken.errors)], "invalid": [invalid.status, list(invalid.errors)]}
