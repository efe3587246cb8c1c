"""No-op handlers for the benchmarks: the work is the orchestration, not the computation."""
from gcl_orchestrator import handler


@handler("fan_root")
def fan_root(ctx):
    """Reads N and spawns N leaves and one join over all of them, from its own result."""
    n = int(ctx.read_text())
    leaves = []
    for i in range(n):
        out = f"leaves/{i:05d}.json"
        ctx.emit(computation=f"leaf:{i}", handler_type="leaf", inputs=[ctx.output], output=out, params={"i": i})
        leaves.append(out)
    ctx.emit(computation="join", handler_type="join", inputs=leaves, output="total.json")
    return n


@handler("leaf")
def leaf(ctx):
    return ctx.params["i"] * 2


@handler("join")
def join(ctx):
    return sum(ctx.read_json(k) for k in ctx.inputs)


@handler("link")
def link(ctx):
    """One link of a chain: spawns the next until params['left'] reaches 0."""
    left = ctx.params["left"]
    if left:
        i = ctx.params["i"] + 1
        ctx.emit(computation=f"link:{i}", handler_type="link", inputs=[ctx.output], output=f"chain/{i:05d}",
                 params={"i": i, "left": left - 1})
    return ctx.params["i"]


@handler("group_head")
def group_head(ctx):
    """The head of a group: reads the group's input and spawns its readers, which read its result."""
    body = ctx.read_text()
    for i in range(ctx.params["width"]):
        ctx.emit(computation=f"{ctx.computation}:r{i}", handler_type="group_reader", inputs=[ctx.output],
                 output=f"{ctx.output}.r{i}", params={"i": i})
    return body


@handler("group_reader")
def group_reader(ctx):
    return f"{ctx.params['i']}:{ctx.read_text()}"


@handler("tree_root")
def tree_root(ctx):
    """bench-scale's tree: reads "GROUPS LEAVES" and spawns GROUPS group heads and a top join over them."""
    groups, leaves = map(int, ctx.read_text().split())
    joins = []
    for g in range(groups):
        ctx.emit(computation=f"g{g}", handler_type="tree_group", inputs=[ctx.output], output=f"groups/{g:05d}",
                 params={"g": g, "leaves": leaves})
        joins.append(f"joins/{g:05d}")
    ctx.emit(computation="top", handler_type="join", inputs=joins, output="top.json")
    return groups


@handler("tree_group")
def tree_group(ctx):
    """A group head: spawns its leaves and the group's join over them."""
    g, n = ctx.params["g"], ctx.params["leaves"]
    outs = []
    for i in range(n):
        out = f"leaves/{g:05d}/{i:05d}"
        ctx.emit(computation=f"g{g}:{i}", handler_type="leaf", inputs=[ctx.output], output=out, params={"i": i})
        outs.append(out)
    ctx.emit(computation=f"g{g}:join", handler_type="join", inputs=outs, output=f"joins/{g:05d}")
    return g


@handler("fan_in_root")
def fan_in_root(ctx):
    """Reads N and spawns N parts and one join over all of them, declared as a range of keys (one short spec)."""
    n = int(ctx.read_text())
    for i in range(n):
        ctx.emit(computation=f"part:{i}", handler_type="leaf", inputs=[ctx.output], output=f"parts/{i:05d}.json",
                 params={"i": i})
    ctx.emit(computation="join", handler_type="join", output="total.json",
             inputs=[{"pattern": "parts/{i:05d}.json", "count": n}])
    return n
