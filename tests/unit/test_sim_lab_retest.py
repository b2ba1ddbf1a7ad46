"""The simulated lab's re-test knobs (issue 10 item 1), without a stack: its HTTP calls are recorded."""

from __future__ import annotations

from typing import Any

from testbuy.sim.lab import LabSim


def lab(**kw: Any) -> tuple[LabSim, list[tuple[str, str, Any]]]:
    calls: list[tuple[str, str, Any]] = []
    sim = LabSim(api_url="http://x", lab_id="lab-b", token="t", truth=lambda oid: (True, (5, 5, 5), 1), **kw)

    def call(method: str, path: str, body: Any = None) -> tuple[int, Any]:
        calls.append((method, path, body))
        if path.endswith("/verdict") and "late" in path:
            return 409, {"error": {"code": "conflict", "message": "sample late was re-assigned from lab lab-b ..."}}
        return 201, {}

    sim.call = call  # type: ignore[method-assign]
    return sim, calls


def verdicts(calls: list[tuple[str, str, Any]]) -> list[str]:
    return [body["verdict"] for _, path, body in calls if path.endswith("/verdict")]


def test_a_retest_draws_its_own_rate() -> None:
    sim, calls = lab(inconclusive_rate=1.0, retest_inconclusive_rate=0.0)
    sim.examine("o-1", attempt=1)
    sim.examine("o-2", attempt=2)
    assert verdicts(calls) == ["inconclusive", "counterfeit"] and sim.retests == 1 and sim.verdicts == 2


def test_a_late_verdict_refused_after_reassignment_is_counted_not_an_error() -> None:
    sim, _ = lab(inconclusive_rate=0.0)
    sim.examine("late")
    assert sim.late_refused == ["late"] and sim.errors == [] and sim.verdicts == 0
