"""The live graph as DOT, Mermaid or JSON, drawn from the status document (so it works from any machine):
keys and computations as nodes, reads and writes as edges, every computation coloured by its state."""
from __future__ import annotations

import json
from typing import Any

COLOURS = {"waiting": "#d9d9d9", "ready": "#fff2a8", "running": "#8ecae6", "retrying": "#ffb703",
           "done": "#90d58f", "failed": "#f28482", "upstream-failed": "#f5cac3"}


DEFAULT_LIMIT = 500  # computations drawn unless told otherwise: a picture of 100,000 boxes helps nobody


def select(status: dict[str, Any], state: str | None = None, around: str | None = None, depth: int = 2,
           limit: int | None = DEFAULT_LIMIT) -> tuple[dict[str, Any], int]:
    """The status document cut to what is asked: computations in `state`; those within `depth` steps of `around`
    (a key or a computation: what reads or writes it, and so on outwards); at most `limit` (None: all). Returns
    the cut document and how many computations matched before the limit."""
    computations = status.get("computations", [])
    if state is not None:
        computations = [c for c in computations if c["state"] == state]
    if around is not None:
        readers: dict[str, list[dict[str, Any]]] = {}
        writer: dict[str, dict[str, Any]] = {}
        for c in computations:
            for key in c["inputs"]:
                readers.setdefault(key, []).append(c)
            writer[c["output"]] = c
        by_name = {c["computation"]: c for c in computations}
        start = [by_name[around]] if around in by_name else readers.get(around, []) + (
            [writer[around]] if around in writer else [])
        chosen = {c["computation"]: c for c in start}
        frontier = list(start)
        for _ in range(max(0, depth - 1)):
            nxt = []
            for c in frontier:
                near = list(readers.get(c["output"], []))
                near += [writer[k] for k in c["inputs"] if k in writer]
                for n in near:
                    if n["computation"] not in chosen:
                        chosen[n["computation"]] = n
                        nxt.append(n)
            frontier = nxt
        computations = [c for c in computations if c["computation"] in chosen]
    matched = len(computations)
    if limit is not None and matched > limit:
        computations = computations[:limit]
    return {**status, "computations": computations}, matched


def graph_data(status: dict[str, Any]) -> dict[str, Any]:
    computations = status.get("computations", [])
    keys: dict[str, dict[str, Any]] = {}
    edges = []
    for c in computations:
        for key in c["inputs"]:
            keys.setdefault(key, {"key": key, "missing": False})
            edges.append({"from": key, "to": c["computation"], "kind": "reads"})
        keys.setdefault(c["output"], {"key": c["output"], "missing": False})
        edges.append({"from": c["computation"], "to": c["output"], "kind": "writes"})
        for key in c.get("missing", []):
            keys.setdefault(key, {"key": key, "missing": True})["missing"] = True
    nodes = [{"id": c["computation"], "type": "computation", "state": c["state"], "handler_type": c["handler_type"],
              "attempts": c["attempts"]} for c in computations]
    nodes += [{"id": k, "type": "key", "missing": v["missing"]} for k, v in sorted(keys.items())]
    return {"nodes": nodes, "edges": edges}


def _quote(*lines: str) -> str:
    """A DOT string; several lines are joined with DOT's own line break."""
    return '"' + "\\n".join(line.replace("\\", "\\\\").replace('"', '\\"') for line in lines) + '"'


def render_dot(status: dict[str, Any]) -> str:
    data = graph_data(status)
    lines = ["digraph gclo {", "  rankdir=LR;", '  node [fontname="Helvetica", fontsize=10];']
    for n in data["nodes"]:
        if n["type"] == "computation":
            label = _quote(n["id"], f"[{n['handler_type']}] {n['state']}")
            lines.append(f"  {_quote('c:' + n['id'])} [shape=box, style=\"rounded,filled\", "
                         f"fillcolor={_quote(COLOURS.get(n['state'], 'white'))}, label={label}];")
        else:
            style = ", style=dashed, color=\"#c1121f\"" if n["missing"] else ""
            lines.append(f"  {_quote('k:' + n['id'])} [shape=note, label={_quote(n['id'])}{style}];")
    for e in data["edges"]:
        src = ("k:" if e["kind"] == "reads" else "c:") + e["from"]
        dst = ("c:" if e["kind"] == "reads" else "k:") + e["to"]
        lines.append(f"  {_quote(src)} -> {_quote(dst)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_mermaid(status: dict[str, Any]) -> str:
    data = graph_data(status)
    ids: dict[str, str] = {}

    def ident(kind: str, name: str) -> str:
        return ids.setdefault(f"{kind}:{name}", f"{kind}{len(ids)}")

    def text(s: str) -> str:
        return s.replace('"', "#quot;")

    lines = ["flowchart LR"]
    for state, colour in COLOURS.items():
        lines.append(f"  classDef {state.replace('-', '_')} fill:{colour},stroke:#555")
    for n in data["nodes"]:
        if n["type"] == "computation":
            lines.append(f"  {ident('c', n['id'])}[\"{text(n['id'])}<br/>{text(n['handler_type'])}: {n['state']}\"]"
                         f":::{n['state'].replace('-', '_')}")
        else:
            lines.append(f"  {ident('k', n['id'])}[(\"{text(n['id'])}{' (missing)' if n['missing'] else ''}\")]")
    for e in data["edges"]:
        src = ident("k", e["from"]) if e["kind"] == "reads" else ident("c", e["from"])
        dst = ident("c", e["to"]) if e["kind"] == "reads" else ident("k", e["to"])
        lines.append(f"  {src} --> {dst}")
    return "\n".join(lines) + "\n"


def render_graph(status: dict[str, Any], fmt: str) -> str:
    if fmt == "dot":
        return render_dot(status)
    if fmt == "mermaid":
        return render_mermaid(status)
    return json.dumps(graph_data(status), indent=1) + "\n"
