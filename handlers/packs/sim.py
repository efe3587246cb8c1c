"""Adaptive simulation: the heat equation on a rod, integrated segment by segment, each segment refining itself.

u_t = a(t) u_xx on [0, 1] with u = 0 at both ends, on a grid of N interior points (the method of lines: a stiff
system of N ODEs). The diffusivity a(t) jumps from small to large half-way through: there the explicit solver
(Heun's method) is unstable at the step that served before, it detects its own divergence and gives up, and GCL
`alternatives` run the implicit one (the trapezoidal rule) instead. Every segment estimates its own error by step
doubling; where the estimate is above the tolerance the handler does not commit a state but emits its two
halves, at half the step, so the graph refines itself only where the solution needs it. The last segment emits
the report, which checks the result against the exact solution of the discretised system.

Each segment's output carries the state at its end and the history so far; each emits the next segment, which
reads it. `params.todo` lists the intervals still to cover, so a refinement is just two intervals in place of one.
"""
from __future__ import annotations

import math

from gcl_orchestrator import PermanentHandlerError, handler


def _grid(n: int):
    import numpy as np

    dx = 1.0 / (n + 1)
    x = np.arange(1, n + 1) * dx
    return x, dx


def _initial(n: int):
    import numpy as np

    x, _ = _grid(n)
    return np.sin(math.pi * x) + 0.5 * np.sin(3 * math.pi * x)


def diffusivity(problem: dict, t: float) -> float:
    return problem["a_high"] if t >= problem["jump_at"] else problem["a_low"]


def exact(problem: dict, t: float):
    """The exact solution of the semi-discrete system: its two sine modes are eigenvectors of the discrete
    Laplacian and decay independently, so only time integration is under test."""
    import numpy as np

    n = problem["n"]
    x, dx = _grid(n)
    jump = problem["jump_at"]
    integral = problem["a_low"] * min(t, jump) + problem["a_high"] * max(0.0, t - jump)  # of a(t) from 0 to t
    out = np.zeros(n)
    for k, amplitude in ((1, 1.0), (3, 0.5)):
        lam = 4.0 / dx ** 2 * math.sin(k * math.pi * dx / 2) ** 2
        out += amplitude * math.exp(-lam * integral) * np.sin(k * math.pi * x)
    return out


def _laplacian(n: int):
    import numpy as np

    _, dx = _grid(n)
    return (np.diag(-2.0 * np.ones(n)) + np.diag(np.ones(n - 1), 1) + np.diag(np.ones(n - 1), -1)) / dx ** 2


def _integrate(problem: dict, u, t0: float, t1: float, h: float, implicit: bool):
    """Fixed steps of about h from t0 to t1 (the diffusivity is constant within a segment): Heun's method
    (explicit, second order), or the trapezoidal rule (implicit, second order, stable at any step)."""
    import numpy as np

    steps = max(1, round((t1 - t0) / h))
    dt = (t1 - t0) / steps
    a = diffusivity(problem, t0)
    A = a * _laplacian(problem["n"])
    if implicit:
        eye = np.eye(problem["n"])
        left, right = eye - dt / 2 * A, eye + dt / 2 * A
        for _ in range(steps):
            u = np.linalg.solve(left, right @ u)
    else:
        for _ in range(steps):
            k1 = A @ u
            u = u + dt / 2 * (k1 + A @ (u + dt * k1))
            if not np.all(np.isfinite(u)) or np.abs(u).max() > 1e6:
                raise PermanentHandlerError(f"the explicit solver diverged on [{t0:g}, {t1:g}] at step {dt:.2e} "
                                            f"(diffusivity {a:g}: the system is stiff here)")
    return u, steps


def _segment(ctx, implicit: bool):
    import numpy as np

    p = ctx.params
    problem, (t0, t1, h), todo = p["problem"], p["interval"], p["todo"]
    previous = ctx.read_json()
    u0 = np.array(previous["u"])
    coarse, _ = _integrate(problem, u0, t0, t1, h, implicit)
    fine, steps = _integrate(problem, u0, t0, t1, h / 2, implicit)
    estimate = float(np.abs(fine - coarse).max())  # step doubling: the error of the coarse result, roughly
    solver = "trapezoidal (implicit)" if implicit else "Heun (explicit)"
    entry = {"t0": t0, "t1": t1, "h": h / 2, "solver": solver, "estimate": estimate, "level": p["level"]}
    history = previous["history"]
    if estimate > problem["tol"] and h / 2 >= problem["min_step"]:
        mid = (t0 + t1) / 2
        halves = [[t0, mid, h / 2], [mid, t1, h / 2]]
        ctx.log.info("[%g, %g]: error estimate %.2e above %.0e with %s; refining into two halves", t0, t1,
                     estimate, problem["tol"], solver)
        # The halves start with the solver that worked here; what follows them starts explicit again.
        halves = [[*halves[0], implicit], [*halves[1], implicit]]
        _emit_next(ctx, problem, halves[0], [halves[1], *todo], source=ctx.inputs[0])
        return {"refined_into": halves, **entry}
    error = float(np.abs(fine - exact(problem, t1)).max())
    history = history + [{**entry, "error": error, "steps": steps}]
    if todo:
        _emit_next(ctx, problem, todo[0], todo[1:], source=ctx.output)
    else:
        ctx.emit(computation="sim:report", handler_type="sim_report", inputs=[ctx.output], output="sim/report.md",
                 params={"problem": problem}, priority="critical")
    return {"t": t1, "u": fine.tolist(), "history": history}


def _emit_next(ctx, problem: dict, interval: list, todo: list, source: str) -> None:
    """Emit the segment for `interval` ([t0, t1, step] or [t0, t1, step, implicit]), which reads `source`."""
    t0, t1, h, *start_implicit = interval
    level = round(math.log2(problem["h0"] / h))  # how many times this piece was halved
    name = f"sim:seg:{t0:.6f}-{t1:.6f}"
    if start_implicit and start_implicit[0]:
        kind, fallback = {"handler_type": "sim_implicit"}, []
    else:  # explicit first; if it diverges, GCL alternatives run the implicit solver on the same segment
        kind, fallback = {"handler_type": "sim_explicit"}, [{"handler_type": "sim_implicit",
                                                            "computation": f"{name}:implicit"}]
    ctx.emit(computation=name, **kind, inputs=[source], output=f"sim/seg/{t0:.6f}-{t1:.6f}.json",
             params={"problem": problem, "interval": [t0, t1, h], "todo": todo, "level": level},
             priority=min(level * 10, 200),  # refined pieces first: the rest of the chain waits for them
             alternatives=fallback)


@handler("sim_start")
def start(ctx):
    """Lay out the top-level segments and start the first; the initial state is this handler's output."""
    problem = ctx.read_json()
    edges = [problem["t_end"] * i / problem["segments"] for i in range(problem["segments"] + 1)]
    intervals = [[a, b, problem["h0"]] for a, b in zip(edges, edges[1:])]
    _emit_next(ctx, problem, intervals[0], intervals[1:], source=ctx.output)
    return {"t": 0.0, "u": _initial(problem["n"]).tolist(), "history": []}


@handler("sim_explicit")
def explicit(ctx):
    return _segment(ctx, implicit=False)


@handler("sim_implicit")
def implicit(ctx):
    return _segment(ctx, implicit=True)


@handler("sim_report")
def report(ctx):
    result = ctx.read_json()
    problem = ctx.params["problem"]
    history = result["history"]
    worst = max(h["error"] for h in history)
    bound = problem["tol"]
    lines = ["# Adaptive simulation: heat equation, explicit with an implicit fallback", "",
             f"{len(history)} segments integrated for {problem['segments']} laid out; largest error against the "
             f"exact solution **{worst:.2e}**, {'under' if worst <= bound else 'OVER'} the tolerance "
             f"{problem['tol']:.0e}; {sum(h['solver'].startswith('trapezoidal') for h in history)} segments fell "
             "back to the implicit solver.", "",
             "| interval | step | solver | error estimate | error vs exact |", "|---|---|---|---|---|"]
    for h in history:
        lines.append(f"| [{h['t0']:.4f}, {h['t1']:.4f}] | {h['h']:.2e} | {h['solver']} | {h['estimate']:.1e} | "
                     f"{h['error']:.1e} |")
    figures = {"worst_error": worst, "bound": bound, "segments": len(history),
               "implicit": sum(h["solver"].startswith("trapezoidal") for h in history)}
    import json

    return "\n".join(lines) + f"\n\n<!-- {json.dumps(figures)} -->\n"
