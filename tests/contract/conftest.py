"""Every ObjectStore implementation, as a fixture the contract suites are parametrised over. The S3 store runs
against real servers over the network: SeaweedFS and moto's server."""
from __future__ import annotations

import uuid

import boto3
import pytest

from gcl_orchestrator.storage import LocalDirectoryStore, MemoryObjectStore, S3ObjectStore

STORES = ["memory", "local", "local-files", "s3-seaweedfs", "s3-moto"]


def s3_endpoint(kind: str, request) -> str:
    server = request.getfixturevalue("seaweedfs" if kind == "s3-seaweedfs" else "moto")
    return server.endpoint


def new_bucket(endpoint: str) -> str:
    name = f"t-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=name)
    return name


def make_store(kind: str, tmp_path, request=None):
    if kind == "memory":
        return MemoryObjectStore(f"contract-{uuid.uuid4().hex[:8]}")
    if kind == "local":
        return LocalDirectoryStore(tmp_path / "store")
    if kind == "local-files":  # metadata in files of its own, as on a filesystem without extended attributes
        return LocalDirectoryStore(tmp_path / "store", xattrs=False)
    if kind.startswith("s3-"):
        endpoint = s3_endpoint(kind, request)
        return S3ObjectStore(new_bucket(endpoint), endpoint_url=endpoint)
    raise ValueError(kind)


@pytest.fixture(params=STORES)
def store(request, tmp_path):
    s = make_store(request.param, tmp_path, request)
    yield s
    s.close()
