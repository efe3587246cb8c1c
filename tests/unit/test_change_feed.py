"""The change feed behind the API's event stream: numbered in order, resumable from any id the ring still holds,
and a client told to reload (never silently skipped) when its id is of another run or older than the window."""
from __future__ import annotations

import json
from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st

from gcl_orchestrator import jsonbytes
from gcl_orchestrator.model import CancelRequested, State
from gcl_orchestrator.service.feed import ChangeFeed

from .test_scheduler_service import core, spec, submit


def pump(c, feed):
    """What the orchestrator does after each batch: hand the core's changes to the watcher."""
    changes, c.changes = c.changes, []
    feed.watch(changes, c)


def fed(max_events=100):
    c = core(slots=1)
    c.changes = []
    feed = ChangeFeed(max_events=max_events, run="r1")
    submit(c, *(spec(f"s{i}") for i in range(5)))
    pump(c, feed)
    return c, feed


def test_changes_are_numbered_in_order_and_resumed_after_any_id_held():
    c, feed = fed()
    assert feed.last_id == "r1.6"  # five registrations, then s0 dispatched
    everything, reset = feed.after("r1.0")
    assert not reset
    assert [(ch.seq, ch.rec.name, ch.state) for ch in everything][:2] == [(1, "s0", State.READY), (2, "s1", State.READY)]
    assert everything[-1].state is State.RUNNING
    after_three, _ = feed.after("r1.3")
    assert [ch.seq for ch in after_three] == [4, 5, 6]
    assert feed.after("r1.6") == ([], False)
    assert feed.after(None) == ([], False)  # a new client gets only what comes next
    limited, _ = feed.after("r1.0", limit=2)
    assert [ch.seq for ch in limited] == [1, 2]


def test_an_id_of_another_run_or_older_than_the_ring_or_from_the_future_asks_for_a_reload():
    c, feed = fed(max_events=2)  # six changes: more than twice two, so the window is cut to the last two
    assert [ch.seq for ch in feed.after("r1.4")[0]] == [5, 6]
    assert feed.after("r1.3") == ([], True)  # 4 fell out of the window: a gap would be silent
    assert feed.after("r0.5") == ([], True)
    assert feed.after("r1.99") == ([], True)
    assert feed.after("garbage") == ([], True)


def test_an_event_says_the_state_entered_and_the_error_of_a_failure():
    c, feed = fed()
    c.handle([CancelRequested("s3", "api")], 1.0)
    pump(c, feed)
    last = json.loads(jsonbytes.dumps(feed.after("r1.6")[0][-1].event()))  # as a client reads it
    assert last["computation"] == "s3" and last["state"] == "failed" and last["cancelled"]
    assert last["error"] == "cancelled (api)" and last["inputs"] == ["in"] and last["output"] == "out/s3"


def test_wakers_are_called_after_each_batch_until_removed():
    c, feed = fed()
    calls = []
    waker = lambda: calls.append(feed.last_id)  # noqa: E731
    feed.add_waker(waker)
    c.handle([CancelRequested("s4", "test")], 2.0)
    pump(c, feed)
    feed.remove_waker(waker)
    c.handle([CancelRequested("s2", "test")], 3.0)
    pump(c, feed)
    assert calls == ["r1.7"] and feed.last_id == "r1.8"


class _Core:
    """What the feed asks of the core: a record by name (every name has one here but `gone`)."""

    def record(self, name):
        if name == "gone":
            return None
        spec = SimpleNamespace(computation=name, inputs=("in",), output=f"out/{name}", handler_type="h")
        return SimpleNamespace(name=name, spec=spec, attempts=0, last_error=None, cancelled=False)


@settings(max_examples=200, deadline=None)
@given(sizes=st.lists(st.integers(1, 7), min_size=1, max_size=12), window=st.integers(1, 20),
       limit=st.integers(1, 9), gone=st.sets(st.integers(1, 84)))
def test_any_id_held_resumes_with_the_changes_after_it_in_order_across_batches(sizes, window, limit, gone):
    feed, core, seq = ChangeFeed(max_events=window, run="r"), _Core(), 0
    for size in sizes:  # batches as the loop hands them over, each a list the feed keeps
        batch = []
        for _ in range(size):
            seq += 1
            batch.append(("gone" if seq in gone else f"c{seq}", State.READY, float(seq)))
        feed.watch(batch, core)
    for last in range(0, seq + 1):
        changes, reset = feed.after(f"r.{last}", limit=limit)
        if reset:  # only an id the window no longer holds is told to reload
            assert last < seq - window
            continue
        wanted = [n for n in range(last + 1, seq + 1) if n not in gone][:limit]
        assert [(ch.seq, ch.rec.name, ch.at) for ch in changes] == [(n, f"c{n}", float(n)) for n in wanted]
        assert [(d["computation"], d["at"], d["state"]) for d in (ch.event() for ch in changes)] == [
            (f"c{n}", float(n), "ready") for n in wanted]
