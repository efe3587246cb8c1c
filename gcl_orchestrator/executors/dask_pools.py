"""The Dask executor's pure half, importable without Dask: the targets `--executor` takes, the core's pools as a
cluster's workers make them, and what one attempt asks of the worker that runs it (see executors/dask.py)."""
from __future__ import annotations

import re
from typing import Any, Collection, Mapping, Sequence

from ..interfaces import Task
from ..model import FrozenDict, PoolSpec

LOCAL_PREFIX = "dask-local:"


def parse_target(text: str) -> tuple[str | None, int | None]:
    """`dask://HOST:PORT` or `tls://HOST:PORT`: (scheduler address, None); `dask-local:N`: (None, N).
    Raises ValueError with the forms it takes."""
    if text.startswith(LOCAL_PREFIX):
        count = text[len(LOCAL_PREFIX):]
        if count.isdigit() and int(count) >= 1:
            return None, int(count)
    elif re.fullmatch(r"(dask|tls)://[^\s/:]+:\d+", text):
        return ("tcp://" + text[len("dask://"):] if text.startswith("dask://") else text), None
    raise ValueError(f"--executor {text!r}: expected process, thread, dask://HOST:PORT, tls://HOST:PORT or "
                     "dask-local:N (N >= 1)")


def affinity_types(workers: Mapping[str, Mapping[str, Any]], handler_types: Collection[str]) -> tuple[str, ...]:
    """The registered handler types some worker offers as a resource: they run only on such workers."""
    offered = {r for info in workers.values() for r in (info.get("resources") or {})}
    return tuple(sorted(t for t in handler_types if t in offered))


def pools_from_workers(workers: Mapping[str, Mapping[str, Any]], affinity: Sequence[str]) -> tuple[PoolSpec, ...]:
    """The core's pools as the cluster is now: `general` with every worker's threads and resources (handler-type
    resources left out), then one pool per affinity type with the workers offering it, its slots the amount
    offered. Slots may be 0 (no such worker now)."""
    def pool(name: str, members: list[Mapping[str, Any]], slots: int, types: tuple[str, ...]) -> PoolSpec:
        capacity: dict[str, float] = {}
        for info in members:
            for r, a in (info.get("resources") or {}).items():
                if r not in affinity:
                    capacity[r] = capacity.get(r, 0.0) + float(a)
        return PoolSpec(name, slots, FrozenDict(capacity), types)

    every = list(workers.values())
    pools = [pool("general", every, sum(int(i.get("nthreads", 1)) for i in every), ())]
    for handler_type in affinity:
        members = [i for i in every if (i.get("resources") or {}).get(handler_type)]
        slots = sum(int(i["resources"][handler_type]) or 1 for i in members)
        pools.append(pool(handler_type, members, slots, (handler_type,)))
    return tuple(pools)


def restrictions(task: Task, affinity: Collection[str], declared: Collection[str]) -> dict[str, float]:
    """The Dask resources one attempt needs on the worker that runs it."""
    wanted = {r: float(a) for r, a in (task.spec.resources or {}).items() if r != "cpu" or "cpu" in declared}
    if task.spec.handler_type in affinity:
        wanted[task.spec.handler_type] = 1.0
    return wanted


def fits_one(wanted: Mapping[str, float], offers: Collection[Mapping[str, float]]) -> bool:
    return any(all(offer.get(r, 0.0) >= a for r, a in wanted.items()) for offer in offers)


def describe(resources: Mapping[str, float]) -> str:
    return ", ".join(f"{r}={a:g}" for r, a in sorted(resources.items())) or "no resources"


def task_key(namespace: str, task: Task) -> str:
    """One attempt, one key: dispatching the same attempt again names the same task."""
    return f"gclo-{namespace}-{task.spec.computation}-{task.attempt}"
