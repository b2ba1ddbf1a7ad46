"""The custody service on an in-memory anchored repository: sealing with the wired key, re-sealing on a moved head,
giving up after a few lost races, skipping a follow-up already done, and failing closed without a key."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from chalicelib.adapters.custody_hmac import LocalHmacKey
from chalicelib.domain.custody import Actor, Anchor, CustodyEntry, next_entry
from chalicelib.domain.errors import Conflict
from chalicelib.services import custody
from chalicelib.services.deps import Deps
from tests.custody_fake import AnchoredFakeCustody

T0 = datetime(2026, 11, 1, tzinfo=UTC)
ACTOR = Actor("dana", "lab", "lab-9")


@dataclass
class Clock:
    at: datetime = T0

    def now(self) -> datetime:
        return self.at


@dataclass
class D:
    custody: AnchoredFakeCustody = field(default_factory=AnchoredFakeCustody)
    clock: Clock = field(default_factory=Clock)
    custody_key: LocalHmacKey | None = field(default_factory=lambda: LocalHmacKey("s" * 40))


def deps(**kw: Any) -> Deps:
    return cast(Deps, D(**kw))


def add(d: Deps, n: int = 0, **kw: Any) -> tuple[CustodyEntry, Anchor]:
    return custody.append(d, "o1", ACTOR, from_party="a", to_party=f"b{n}", location="bench", condition="ok", **kw)


def test_appends_are_sealed_with_the_wired_key_and_verify() -> None:
    d = deps()
    for n in range(3):
        entry, anchor = add(d, n)
        assert anchor == Anchor(n + 1, entry.mac) and entry.actor == ACTOR and entry.at == T0
    report = custody.report(d, "o1")
    assert report["valid"] and report["length"] == 3 and report["anchored_head"] == report["head"]
    assert report["entries"][2]["actor"] == {"subject": "dana", "role": "lab", "lab_id": "lab-9"}


def test_a_rival_append_makes_the_entry_re_sealed_on_the_new_head() -> None:
    d = deps()
    first, _ = add(d, 0)
    rival = next_entry(
        first,
        key=d.custody_key,  # type: ignore[arg-type]
        order_id="o1",
        actor=Actor("erin", "lab", "lab-9"),
        from_party="a",
        to_party="b9",
        at=T0,
        location="bench",
        condition="ok",
    )
    d.custody.interleave.append(rival)  # type: ignore[attr-defined]  # lands between our read and our write
    entry, anchor = add(d, 1)
    assert entry.seq == 2 and entry.prev_mac == rival.mac and anchor == Anchor(3, entry.mac)
    assert [e.to_party for e in d.custody.chain("o1")] == ["b0", "b9", "b1"]
    assert custody.report(d, "o1")["valid"] is True


def test_after_losing_every_race_the_append_gives_up_with_a_conflict() -> None:
    d = deps()
    add(d, 0)

    class AlwaysMoved(AnchoredFakeCustody):
        def append(self, entry: CustodyEntry) -> Anchor:
            raise Conflict("the anchor moved")

    d.custody = AlwaysMoved()  # type: ignore[misc]
    with pytest.raises(Conflict, match="changed on every attempt"):
        add(d, 1)


def test_a_follow_up_already_in_the_chain_is_not_appended_again() -> None:
    d = deps()
    entry, anchor = add(d, 0, once=lambda e: e.to_party == "b0")
    again, anchor2 = add(d, 0, once=lambda e: e.to_party == "b0")
    assert again == entry and anchor2 == anchor and len(d.custody.chain("o1")) == 1


def test_without_a_key_custody_fails_closed() -> None:
    d = deps(custody_key=None)
    with pytest.raises(RuntimeError, match="no custody key"):
        add(d)
    with pytest.raises(RuntimeError, match="no custody key"):
        custody.report(d, "o1")
    assert d.custody.chain("o1") == []
