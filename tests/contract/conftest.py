"""Every ObjectStore implementation, as a fixture the contract suites are parametrised over."""
from __future__ import annotations

import uuid

import pytest

from gcl_orchestrator.storage import LocalDirectoryStore, MemoryObjectStore

STORES = ["memory", "local"]


def make_store(kind: str, tmp_path):
    if kind == "memory":
        return MemoryObjectStore(f"contract-{uuid.uuid4().hex[:8]}")
    if kind == "local":
        return LocalDirectoryStore(tmp_path / "store")
    raise ValueError(kind)


@pytest.fixture(params=STORES)
def store(request, tmp_path):
    s = make_store(request.param, tmp_path)
    yield s
    s.close()
