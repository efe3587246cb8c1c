"""Decisions built as data arrives: a classification tree that grows in the graph, node by node.

Records of scikit-learn's breast-cancer dataset arrive as small CSV batches (`stream/batch-NNN.csv`, dropped
over time). A rule turns each batch into an `tree_ingest` computation; every `regrow_every` batches it starts a
new generation of the tree over every record so far. Each node's handler reads the records that reach it, picks
the split with the lowest Gini impurity, and emits its two children and a join (`tree_merge`) that assembles the
subtree once both are built: the tree grows top-down in the graph and is assembled bottom-up. `tree_evaluate`
classifies the held-out records with the finished tree and writes a readable report; a completion handler keeps
a running summary of the generations.
"""
from __future__ import annotations

import csv
import io
import json
import logging

from gcl_orchestrator import handler

log = logging.getLogger("gclo.handler.tree")
SUMMARY: list[str] = []  # the completion handler's running summary (the orchestrator's process)


def _rows(text: str) -> tuple[list[str], list[list[float]], list[int]]:
    reader = csv.reader(io.StringIO(text))
    header = next(reader)
    X, y = [], []
    for row in reader:
        X.append([float(v) for v in row[:-1]])
        y.append(int(row[-1]))
    return header[:-1], X, y


def _records(ctx, keys) -> tuple[list[str], list[list[float]], list[int]]:
    names, X, y = [], [], []
    for key in keys:
        names, x_part, y_part = _rows(ctx.read_text(key))
        X += x_part
        y += y_part
    return names, X, y


def _reaches(row: list[float], path: list) -> bool:
    return all((row[f] <= t) == (side == "left") for f, t, side in path)


def _gini(counts) -> float:
    n = sum(counts)
    return 1.0 - sum((c / n) ** 2 for c in counts) if n else 0.0


def best_split(X, y, min_leaf: int):
    """(feature, threshold, impurity after the split) with the lowest weighted Gini impurity, or None."""
    import numpy as np

    X, y = np.asarray(X), np.asarray(y)
    n = len(y)
    best = None
    for f in range(X.shape[1]):
        order = np.argsort(X[:, f], kind="stable")
        xs, ys = X[order, f], y[order]
        ones = np.cumsum(ys)  # records of class 1 up to each position
        for i in range(min_leaf, n - min_leaf + 1):  # cut between positions i - 1 and i
            if xs[i - 1] == xs[i]:
                continue  # no threshold separates equal values
            left1, right1 = ones[i - 1], ones[-1] - ones[i - 1]
            impurity = (i * _gini((i - left1, left1)) + (n - i) * _gini((n - i - right1, right1))) / n
            if best is None or impurity < best[2] - 1e-12:
                best = (f, float((xs[i - 1] + xs[i]) / 2), float(impurity))
    return best


@handler("tree_ingest")
def ingest(ctx):
    """One batch arrived; every `regrow_every` batches a new generation of the tree starts over all so far."""
    p = ctx.params
    number = int(ctx.inputs[0].rsplit("-", 1)[1].split(".")[0])
    _, _, y = _rows(ctx.read_text())
    if (number + 1) % p["regrow_every"] == 0 or number + 1 == p["batches"]:
        generation = (number + 1 + p["regrow_every"] - 1) // p["regrow_every"]
        batches = [f"stream/batch-{i:03d}.csv" for i in range(number + 1)]
        ctx.emit(_node(generation, "root", [], batches, p))
        ctx.emit(computation=f"tree:g{generation}:evaluate", handler_type="tree_evaluate",
                 inputs=[f"tree/g{generation}/root.json", "stream/holdout.csv"],
                 output=f"tree/g{generation}/report.md", params={"generation": generation, "batches": number + 1},
                 notify=["tree_summary"], priority="high")
        ctx.log.info("batch %d: generation %d of the tree starts over %d batches", number, generation, number + 1)
    return {"batch": number, "records": len(y)}


def _node(generation: int, name: str, path: list, batches: list[str], p: dict) -> dict:
    """A node's computation: it writes `tree/gN/NAME.json` itself if it is a leaf, else its join does."""
    return {"computation": f"tree:g{generation}:{name}", "handler_type": "tree_node", "inputs": batches,
            "output": f"tree/g{generation}/{name}.split.json",
            "params": {**p, "generation": generation, "name": name, "path": path},
            "priority": -len(path)}  # shallow nodes first: they decide what the deep ones see


@handler("tree_node")
def node(ctx):
    p = ctx.params
    names, X, y = _records(ctx, ctx.inputs)
    keep = [i for i, row in enumerate(X) if _reaches(row, p["path"])]
    X, y = [X[i] for i in keep], [y[i] for i in keep]
    counts = [y.count(0), y.count(1)]
    prefix = f"tree/g{p['generation']}/{p['name']}"
    split = None
    if len(p["path"]) < p["max_depth"] and len(y) >= 2 * p["min_leaf"] and min(counts) > 0:
        split = best_split(X, y, p["min_leaf"])
    if split is None:  # a leaf: its subtree is itself, written by a join with nothing to wait for
        leaf = {"leaf": int(counts[1] > counts[0]), "counts": counts}
        ctx.emit(computation=f"tree:g{p['generation']}:{p['name']}:subtree", handler_type="tree_merge",
                 inputs=[ctx.output], output=f"{prefix}.json", params={"leaf": leaf})
        return {"records": len(y), "leaf": leaf}
    feature, threshold, impurity = split
    children = []
    for side in ("left", "right"):
        child = f"{p['name']}.{side[0]}"
        children.append(f"tree/g{p['generation']}/{child}.json")
        ctx.emit(_node(p["generation"], child, p["path"] + [[feature, threshold, side]], ctx.inputs, p))
    ctx.emit(computation=f"tree:g{p['generation']}:{p['name']}:subtree", handler_type="tree_merge",
             inputs=[ctx.output, *children], output=f"{prefix}.json",
             params={"split": {"feature": feature, "name": names[feature], "threshold": threshold,
                               "counts": counts, "impurity": impurity}})
    return {"records": len(y), "split": [names[feature], threshold]}


@handler("tree_merge")
def merge(ctx):
    p = ctx.params
    if "leaf" in p:
        return p["leaf"]
    left, right = (ctx.read_json(k) for k in ctx.inputs[1:])
    return {**p["split"], "left": left, "right": right}


def classify(tree: dict, row: list[float]) -> int:
    while "leaf" not in tree:
        tree = tree["left"] if row[tree["feature"]] <= tree["threshold"] else tree["right"]
    return tree["leaf"]


def describe(tree: dict, depth: int = 0) -> list[str]:
    pad = "    " * depth
    if "leaf" in tree:
        label = "malignant" if tree["leaf"] == 0 else "benign"
        return [f"{pad}-> {label} ({tree['counts'][0]} malignant, {tree['counts'][1]} benign)"]
    return ([f"{pad}if {tree['name']} <= {tree['threshold']:.4g}:"] + describe(tree["left"], depth + 1)
            + [f"{pad}else:"] + describe(tree["right"], depth + 1))


@handler("tree_evaluate")
def evaluate(ctx):
    tree = ctx.read_json(ctx.inputs[0])
    _, X, y = _rows(ctx.read_text("stream/holdout.csv"))
    accuracy = sum(classify(tree, row) == label for row, label in zip(X, y)) / len(y)
    majority = max(y.count(0), y.count(1)) / len(y)
    lines = [f"# Decision tree, generation {ctx.params['generation']} ({ctx.params['batches']} batches)", "",
             f"Held-out accuracy **{accuracy:.3f}** against {majority:.3f} for always answering the majority "
             f"class ({len(y)} records).", "", "```", *describe(tree), "```"]
    figures = json.dumps({"accuracy": accuracy, "majority": majority, "generation": ctx.params["generation"]})
    return "\n".join(lines) + f"\n\n<!-- {figures} -->\n"


@handler.on_complete("tree_summary")
def summary(completion):
    """Keeps a running summary of the generations as their evaluations end (GCL `notify`)."""
    SUMMARY.append(f"{completion.computation}: {completion.state}")
    log.info("tree summary: %s", "; ".join(SUMMARY))
