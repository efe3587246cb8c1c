"""Metrics in the Prometheus exposition format (prometheus-client, a registry of its own): computations by
state, the time from ready to dispatched and the duration of attempts (histograms fed by the change feed),
store calls by kind, the event queue's depth, incidents and rejections. A scrape asks the loop for one snapshot
(a few counters: no scan of the graph)."""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ..model import State
from .feed import ChangeFeed

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
ENDS_OF_ATTEMPT = frozenset(State) - {State.RUNNING}


class _Snapshot(Collector):
    """What the loop said at the start of this scrape."""

    def __init__(self) -> None:
        self.doc: Mapping[str, Any] = {}

    def collect(self) -> Iterable[Any]:
        doc = self.doc
        by_state = GaugeMetricFamily("gclo_computations", "Computations in the graph, by state", labels=["state"])
        for state in State:
            by_state.add_metric([state.value], doc.get("counts", {}).get(state.value, 0))
        yield by_state
        calls = CounterMetricFamily("gclo_store_calls", "Calls the orchestrator made to the store, by kind",
                                    labels=["kind"])
        for kind, n in sorted(doc.get("store_calls", {}).items()):
            calls.add_metric([kind], n)
        yield calls
        yield GaugeMetricFamily("gclo_event_queue_depth", "Events waiting in the orchestrator's queue",
                                value=doc.get("queue", 0))
        yield GaugeMetricFamily("gclo_worker_slots", "Worker slots of the executor", value=doc.get("slots", 0))
        yield CounterMetricFamily("gclo_incidents", "Incidents reported (store outages, unreadable objects, ...)",
                                  value=doc.get("incidents", 0))
        yield CounterMetricFamily("gclo_rejected_specs", "Specs refused (invalid GCL, conflicts, cycles)",
                                  value=doc.get("rejected", 0))
        yield CounterMetricFamily("gclo_state_changes", "State changes of computations since the start",
                                  value=doc.get("changes", 0))


class Metrics:
    """Listens to the change feed for the histograms; `render(snapshot)` writes one scrape."""

    def __init__(self, feed: ChangeFeed):
        self.registry = CollectorRegistry(auto_describe=True)
        self.dispatch_latency = Histogram(
            "gclo_dispatch_latency_seconds", "Time from ready (every input there) to dispatched to a worker",
            buckets=LATENCY_BUCKETS, registry=self.registry)
        self.attempt_duration = Histogram(
            "gclo_attempt_duration_seconds", "Time from dispatch to the attempt's end, by how it ended",
            labelnames=["outcome"], buckets=DURATION_BUCKETS, registry=self.registry)
        self._snapshot = _Snapshot()
        self.registry.register(self._snapshot)
        self._ready_at: dict[str, float] = {}  # computations ready now -> since when (in-flight only)
        self._running_at: dict[str, float] = {}
        self.changes = 0
        feed.listen(self._changed)

    def _changed(self, batch: list[tuple[str, State, float]]) -> None:
        self.changes += len(batch)
        ready_at, running_at = self._ready_at, self._running_at
        for name, state, at in batch:
            started = running_at.pop(name, None)
            if started is not None and state in ENDS_OF_ATTEMPT:
                outcome = "done" if state is State.DONE else "failed" if state is State.FAILED else \
                    "retry" if state is State.RETRYING else "other"
                self.attempt_duration.labels(outcome).observe(max(0.0, at - started))
            if state is State.READY:
                ready_at[name] = at
            else:
                since = ready_at.pop(name, None)
                if state is State.RUNNING:
                    running_at[name] = at
                    if since is not None:
                        self.dispatch_latency.observe(max(0.0, at - since))

    def render(self, snapshot: Mapping[str, Any]) -> bytes:
        self._snapshot.doc = {**snapshot, "changes": self.changes}
        return generate_latest(self.registry)
