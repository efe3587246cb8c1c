"""`gclo graph` on a large graph draws what is asked: a state, what is around a key, at most N computations."""
from __future__ import annotations

from gcl_orchestrator.views import select


def chain_status(n):
    """c0 reads k0 and writes k1, c1 reads k1 and writes k2, ...; every tenth one failed."""
    return {"computations": [{"computation": f"c{i}", "inputs": [f"k{i}"], "output": f"k{i + 1}",
                              "state": "failed" if i % 10 == 0 else "done", "handler_type": "h", "attempts": 1}
                             for i in range(n)]}


def names(doc):
    return [c["computation"] for c in doc["computations"]]


def test_a_large_graph_is_cut_to_the_limit_and_says_how_many_matched():
    doc, matched = select(chain_status(10_000))
    assert matched == 10_000 and len(doc["computations"]) == 500
    doc, matched = select(chain_status(10_000), limit=None)
    assert len(doc["computations"]) == 10_000


def test_a_state_and_a_key_choose_what_is_drawn():
    doc, matched = select(chain_status(100), state="failed")
    assert matched == 10 and names(doc)[:3] == ["c0", "c10", "c20"]
    doc, _ = select(chain_status(100), around="k50")  # its writer c49 and reader c50, and one step beyond each
    assert names(doc) == ["c48", "c49", "c50", "c51"]
    doc, _ = select(chain_status(100), around="c50", depth=1)
    assert names(doc) == ["c50"]
    assert select(chain_status(100), around="nothing")[1] == 0
