"""Adaptive ML training: a hyperparameter search that decides its next trials from the results so far.

Successive halving over scikit-learn's SGDClassifier on the handwritten-digits dataset that ships with
scikit-learn. `ml_plan` draws the first rung of trials (a few epochs each) and a baseline (the default
parameters); each rung's `ml_promote` join reads its trials' validation scores, keeps the best third and emits the
next rung with three times the epochs, until one configuration is left; `ml_final` trains it fully and compares it
with the baseline on held-out data, in a report that says which trials were stopped after which rung.

What the graph shows: results choosing the next steps (each rung exists only once the previous one is scored),
priorities (later rungs first), declared resources, retries for trials, and completion notifications.
"""
from __future__ import annotations

import json
import logging
import random
import warnings

from gcl_orchestrator import handler

log = logging.getLogger("gclo.handler.ml")
LOSSES = ("hinge", "log_loss", "modified_huber")
PENALTIES = ("l2", "l1", "elasticnet")


def _data(seed: int):
    """Digits split three ways, the same for every trial: fit, validation (for the search), held-out (for the
    report alone)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=seed, stratify=y)
    X_fit, X_val, y_fit, y_val = train_test_split(X_train, y_train, test_size=0.25, random_state=seed,
                                                  stratify=y_train)
    return (X_fit, y_fit), (X_val, y_val), (X_train, y_train), (X_test, y_test)


def _model(config: dict | None, epochs: int | None, seed: int):
    from sklearn.linear_model import SGDClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if config is None:  # the baseline: scikit-learn's defaults
        return SGDClassifier(random_state=seed)
    model = SGDClassifier(loss=config["loss"], alpha=config["alpha"], penalty=config["penalty"],
                          average=config["average"], max_iter=epochs, tol=None, random_state=seed)
    return make_pipeline(StandardScaler(), model) if config["scale"] else model


def _trial(rung: int, index: int, config: dict, epochs: int, seed: int, after: str) -> dict:
    """A trial runs after `after` (the plan, or the join of the rung before), which decided on it."""
    return {"computation": f"ml:trial:r{rung}:c{index:02d}", "handler_type": "ml_trial",
            "inputs": [after], "output": f"ml/rungs/{rung}/c{index:02d}.json",
            "params": {"config": config, "epochs": epochs, "seed": seed, "rung": rung, "index": index},
            "priority": 10 * rung,  # the survivors of a rung are worth more than the rest of the one before
            "resources": {"cpu": 1}, "retry": {"max_attempts": 2, "initial_delay_s": 0.2},
            "notify": ["ml_progress"]}


def _rung(rung: int, trials: list[dict], search: dict) -> list[dict]:
    join = {"computation": f"ml:rung:{rung}", "handler_type": "ml_promote",
            "inputs": [t["output"] for t in trials], "output": f"ml/rungs/{rung}.json",
            "params": {"rung": rung, "eta": search["eta"], "epochs": trials[0]["params"]["epochs"],
                       "seed": search["seed"], "history": search.get("history", [])}}
    return trials + [join]


@handler("ml_plan")
def plan(ctx):
    """Draw the first rung of configurations, the baseline, and the first rung's join."""
    search = ctx.read_json()
    rng = random.Random(search["seed"])
    configs = [{"loss": rng.choice(LOSSES), "alpha": 10 ** rng.uniform(-6, -1), "penalty": rng.choice(PENALTIES),
                "scale": rng.random() < 0.5, "average": rng.random() < 0.5} for _ in range(search["trials"])]
    trials = [_trial(0, i, c, search["min_epochs"], search["seed"], ctx.output) for i, c in enumerate(configs)]
    for spec in _rung(0, trials, search):
        ctx.emit(spec)
    ctx.emit(computation="ml:baseline", handler_type="ml_baseline", inputs=[ctx.output],
             output="ml/baseline.json", params={"seed": search["seed"]}, resources={"cpu": 1})
    return {"trials": len(configs), "configs": configs}


@handler("ml_trial")
def trial(ctx):
    """Train one configuration for its rung's epochs and score it on the validation split."""
    p = ctx.params
    (X_fit, y_fit), (X_val, y_val), _, _ = _data(p["seed"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # few epochs on purpose: convergence warnings are the point of a rung
        model = _model(p["config"], p["epochs"], p["seed"]).fit(X_fit, y_fit)
    score = float(model.score(X_val, y_val))
    return {"index": p["index"], "rung": p["rung"], "epochs": p["epochs"], "config": p["config"],
            "validation_accuracy": score}


@handler("ml_promote")
def promote(ctx):
    """Keep the best third of a rung; emit the next rung with three times the epochs, or the final training."""
    p = ctx.params
    results = sorted((ctx.read_json(k) for k in ctx.inputs),
                     key=lambda r: (-r["validation_accuracy"], r["index"]))
    keep = max(1, len(results) // p["eta"])
    survivors, stopped = results[:keep], results[keep:]
    history = p["history"] + [{"rung": p["rung"], "epochs": p["epochs"],
                               "kept": [(r["index"], r["validation_accuracy"]) for r in survivors],
                               "stopped": [(r["index"], r["validation_accuracy"]) for r in stopped]}]
    log.info("rung %d (%d epochs): kept %s, stopped %d", p["rung"], p["epochs"],
             ", ".join(f"c{r['index']:02d}={r['validation_accuracy']:.3f}" for r in survivors), len(stopped))
    if len(survivors) == 1:
        ctx.emit(computation="ml:final", handler_type="ml_final", inputs=[ctx.output, "ml/baseline.json"],
                 output="ml/report.md", params={"seed": p["seed"], "epochs": p["epochs"] * p["eta"]},
                 priority="critical", resources={"cpu": 1})
    else:
        rung = p["rung"] + 1
        trials = [_trial(rung, r["index"], r["config"], p["epochs"] * p["eta"], p["seed"], ctx.output)
                  for r in survivors]
        for spec in _rung(rung, trials, {"eta": p["eta"], "seed": p["seed"], "history": history}):
            ctx.emit(spec)
    return {"rung": p["rung"], "best": survivors[0], "history": history}


@handler("ml_baseline")
def baseline(ctx):
    _, _, (X_train, y_train), (X_test, y_test) = _data(ctx.params["seed"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = _model(None, None, ctx.params["seed"]).fit(X_train, y_train)
    return {"test_accuracy": float(model.score(X_test, y_test)), "model": "SGDClassifier() with defaults"}


@handler("ml_final")
def final(ctx):
    """Train the winner on the whole training split, score it on held-out data, and write the report."""
    last = ctx.read_json(ctx.inputs[0])
    base = ctx.read_json("ml/baseline.json")
    best = last["best"]
    _, _, (X_train, y_train), (X_test, y_test) = _data(ctx.params["seed"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = _model(best["config"], ctx.params["epochs"], ctx.params["seed"]).fit(X_train, y_train)
    tuned = float(model.score(X_test, y_test))
    gain = tuned - base["test_accuracy"]
    lines = ["# Hyperparameter search: successive halving", "",
             f"Held-out accuracy: tuned **{tuned:.4f}**, baseline ({base['model']}) {base['test_accuracy']:.4f}: "
             f"{'+' if gain >= 0 else ''}{gain * 100:.2f} points.", "",
             f"Winner: trial c{best['index']:02d}, {json.dumps(best['config'], sort_keys=True)}, trained for "
             f"{ctx.params['epochs']} epochs.", "", "| rung | epochs | kept (validation accuracy) | stopped |",
             "|---|---|---|---|"]
    for h in last["history"]:
        kept = ", ".join(f"c{i:02d} ({a:.3f})" for i, a in h["kept"])
        stopped = ", ".join(f"c{i:02d}" for i, _ in h["stopped"]) or "-"
        lines.append(f"| {h['rung']} | {h['epochs']} | {kept} | {stopped} |")
    figures = json.dumps({"tuned": tuned, "baseline": base["test_accuracy"]})
    ctx.log.info("tuned %.4f vs baseline %.4f on held-out data", tuned, base["test_accuracy"])
    return "\n".join(lines) + f"\n\n<!-- {figures} -->\n"  # the figures for tools, in a comment


@handler.on_complete("ml_progress")
def progress(completion):
    """Told of every trial as it ends (GCL `notify`), in the orchestrator's process."""
    if not completion.succeeded:
        log.warning("trial %s ended %s: %s", completion.computation, completion.state, completion.error)
