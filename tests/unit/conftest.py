"""Every unit test that drives the scheduling core checks all of its invariants after every step."""
from __future__ import annotations

import pytest

from gcl_orchestrator.core import Scheduler


@pytest.fixture(autouse=True)
def core_invariants_after_every_step(monkeypatch):
    handle = Scheduler.handle

    def checked(self, events, now):
        out = handle(self, events, now)
        self.validate_state()
        return out

    monkeypatch.setattr(Scheduler, "handle", checked)
