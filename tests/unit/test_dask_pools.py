"""The Dask executor's pure half: the targets --executor takes, the core's pools as a cluster's workers make them,
what one attempt asks of the worker that runs it; and the configuration errors a user meets first."""
from __future__ import annotations

import sys

import pytest

from gcl_orchestrator.config import RunSettings, build_orchestrator
from gcl_orchestrator.errors import ConfigError
from gcl_orchestrator.executors.dask_pools import (affinity_types, fits_one, parse_target, pools_from_workers,
                                                   restrictions, task_key)
from gcl_orchestrator.gcl import spec_from_mapping
from gcl_orchestrator.interfaces import Task
from gcl_orchestrator.model import PoolSpec

WORKERS = {
    "tcp://127.0.0.1:1": {"nthreads": 2, "resources": {"gpu": 1, "ml_handler": 1}},
    "tcp://127.0.0.1:2": {"nthreads": 4, "resources": {}},
    "tcp://127.0.0.1:3": {"nthreads": 1, "resources": {"gpu": 2, "memory_mb": 4000}},
}


def task(handler_type="h", resources=None):
    fields = {"computation": "c", "inputs": ["in"], "output": "out", "handler_type": handler_type}
    if resources:
        fields["resources"] = resources
    return Task(spec_from_mapping(fields), 3, "file:///tmp/x")


def test_targets_are_a_scheduler_address_or_a_local_cluster_size_and_anything_else_says_what_it_takes():
    assert parse_target("dask://10.0.0.5:8786") == ("tcp://10.0.0.5:8786", None)
    assert parse_target("tls://sched.example:8786") == ("tls://sched.example:8786", None)
    assert parse_target("dask-local:3") == (None, 3)
    for bad in ("dask-local:0", "dask-local:", "dask://host", "http://h:1", "dask"):
        with pytest.raises(ValueError, match="expected process, thread, dask://HOST:PORT"):
            parse_target(bad)


def test_pools_count_every_worker_for_general_work_and_only_the_offering_workers_for_an_affine_type():
    affinity = affinity_types(WORKERS, ["ml_handler", "report", "gpu_less"])
    assert affinity == ("ml_handler",)
    general, ml = pools_from_workers(WORKERS, affinity)
    assert general == PoolSpec("general", 7, general.capacity, ())
    assert dict(general.capacity) == {"cpu": 7.0, "gpu": 3.0, "memory_mb": 4000.0}
    assert (ml.name, ml.slots, ml.handler_types, dict(ml.capacity)) == ("ml_handler", 1, ("ml_handler",),
                                                                       {"cpu": 1.0, "gpu": 1.0})


def test_a_pool_whose_workers_left_has_no_slots_and_keeps_its_name():
    general, ml = pools_from_workers({"tcp://127.0.0.1:2": WORKERS["tcp://127.0.0.1:2"]}, ("ml_handler",))
    assert (general.slots, ml.name, ml.slots) == (4, "ml_handler", 0)


def test_an_attempt_asks_dask_for_its_gcl_resources_and_its_affine_type_and_for_cpu_only_where_workers_count_it():
    assert restrictions(task(resources={"gpu": 1, "cpu": 2}), ("ml_handler",), {"gpu"}) == {"gpu": 1.0}
    assert restrictions(task(resources={"cpu": 2}), (), {"cpu"}) == {"cpu": 2.0}
    assert restrictions(task("ml_handler", {"gpu": 1}), ("ml_handler",), {"gpu"}) == {"gpu": 1.0,
                                                                                       "ml_handler": 1.0}
    assert restrictions(task(), ("ml_handler",), set()) == {}


def test_a_demand_fits_when_one_worker_alone_offers_all_of_it():
    offers = [w["resources"] for w in WORKERS.values()]
    assert fits_one({"gpu": 2, "memory_mb": 1000}, offers)
    assert not fits_one({"gpu": 2, "ml_handler": 1}, offers)  # each worker has one half
    assert not fits_one({"tpu": 1}, offers)


def test_one_attempt_is_one_key_so_a_duplicate_dispatch_names_the_same_task():
    assert task_key("ns", task()) == task_key("ns", task()) == "gclo-ns-c-3"


def test_flags_that_size_the_pools_here_are_refused_beside_a_cluster_that_sizes_them(tmp_path):
    handlers = tmp_path / "h.py"
    handlers.write_text("from gcl_orchestrator import handler\n@handler('h')\ndef h(ctx):\n    return 1\n")
    for extra, flag in (({"workers": 3}, "--workers"), ({"resources": "gpu=1"}, "--resources"),
                        ({"pools": ["h=1"]}, "--pool")):
        with pytest.raises(ConfigError, match=f"{flag} cannot be used with --executor dask-local:2"):
            build_orchestrator(RunSettings(store=str(tmp_path / "s"), handlers=[str(handlers)],
                                           executor="dask-local:2", **extra))
    with pytest.raises(ConfigError, match="expected process, thread"):
        build_orchestrator(RunSettings(store=str(tmp_path / "s"), handlers=[str(handlers)], executor="dask:2"))


def test_without_dask_installed_the_error_says_which_extra_to_install(tmp_path, monkeypatch):
    handlers = tmp_path / "h.py"
    handlers.write_text("from gcl_orchestrator import handler\n@handler('h')\ndef h(ctx):\n    return 1\n")
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed now raises ImportError
    monkeypatch.delitem(sys.modules, "gcl_orchestrator.executors.dask", raising=False)
    with pytest.raises(ConfigError, match=r"needs Dask distributed .*pip install 'gcl-orchestrator\[dask\]'"):
        build_orchestrator(RunSettings(store=str(tmp_path / "s"), handlers=[str(handlers)],
                                       executor="dask-local:1"))
