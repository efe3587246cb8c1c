"""What every executor needs to know of the worker pools it serves."""
from __future__ import annotations

from typing import Sequence

from ..model import PoolSpec


def as_pools(pools: int | Sequence[PoolSpec]) -> tuple[PoolSpec, ...]:
    """A bare worker count is one general pool of that size."""
    return (PoolSpec("general", pools),) if isinstance(pools, int) else tuple(pools)
