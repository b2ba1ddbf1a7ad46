"""The custody tamper matrix on the domain: every tampering is detected, with the right entry named.

Attackers modelled: one with write access to the table but not the key (edits, deletions, reorders, insertions,
plain-SHA-256 re-hashes, re-seals with a key of their own), and one who also holds the key (only the checkpoint
published in ``VerdictRecorded``, outside the table, exposes what they did)."""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.adapters.custody_hmac import LocalHmacKey, key_id_for
from chalicelib.domain import custody as c
from chalicelib.domain.custody import GENESIS, Actor, Anchor, CustodyEntry, next_entry, verify_chain

T0 = datetime(2026, 11, 1, tzinfo=UTC)
KEY = LocalHmacKey("k" * 40)
ATTACKER = LocalHmacKey("a" * 40)  # a key of the attacker's own
LAB = Actor("alice", "lab", "lab-1")


def chain(n: int, key: LocalHmacKey = KEY, order_id: str = "o1") -> list[CustodyEntry]:
    entries: list[CustodyEntry] = []
    for i in range(n):
        entries.append(
            next_entry(
                entries[-1] if entries else None,
                key=key,
                order_id=order_id,
                actor=Actor.system("forward_to_lab") if i == 0 else LAB,
                from_party=f"p{i}",
                to_party=f"p{i + 1}",
                at=T0 + timedelta(hours=i),
                location="dock",
                condition="sealed",
                evidence=[f"{i:064x}"],
            )
        )
    return entries


def anchor_of(entries: list[CustodyEntry]) -> Anchor:
    return Anchor(len(entries), entries[-1].mac if entries else GENESIS)


def reseal(entries: list[CustodyEntry], start: int, mac) -> list[CustodyEntry]:  # type: ignore[no-untyped-def]
    """What a forger does from ``start`` on: relink each entry to the one before and recompute its "MAC" with
    ``mac(entry) -> str``; returns the new chain."""
    out = list(entries[:start])
    for e in entries[start:]:
        e = replace(e, prev_mac=out[-1].mac if out else GENESIS)
        out.append(replace(e, mac=mac(e)))
    return out


def plain_sha256(e: CustodyEntry) -> str:
    return hashlib.sha256(e.canonical()).hexdigest()


def wrong_key(e: CustodyEntry) -> str:
    return ATTACKER.mac(ATTACKER.current_key_id(), e.digest())


def check(report: c.ChainReport, first_bad: int, reason: str) -> None:
    assert not report.valid
    assert (report.first_bad_seq, report.reason) == (first_bad, reason), report.detail


# ------------------------------------------------------------------------------------------------ the honest chain
def test_a_fresh_chain_verifies_against_its_anchor_and_records_who_logged_each_entry() -> None:
    entries = chain(4)
    report = verify_chain(entries, KEY, anchor_of(entries), order_id="o1")
    assert report.valid and report.length == 4 and report.head == entries[-1].mac
    assert (report.anchored_length, report.anchored_head) == (4, entries[-1].mac)
    assert entries[0].prev_mac == GENESIS and all(b.prev_mac == a.mac for a, b in itertools.pairwise(entries))
    assert entries[0].actor == Actor("system:forward_to_lab", "system") and entries[1].actor == LAB
    assert {e.key_id for e in entries} == {KEY.current_key_id()}
    assert verify_chain([], KEY, None).valid and verify_chain([], KEY, Anchor.empty()).valid


def test_the_mac_is_keyed_not_a_plain_hash() -> None:
    e = chain(1)[0]
    assert e.mac != plain_sha256(e)
    assert e.mac != wrong_key(e)
    assert not KEY.verify(e.key_id, e.digest(), wrong_key(e))


# ------------------------------------------------------------------------------------------------ without the key
FIELDS = {
    "location": "elsewhere",
    "condition": "seal broken",
    "from_party": "someone",
    "to_party": "someone else",
    "at": T0 - timedelta(days=3),
    "evidence": ("f" * 64,),
    "actor": Actor("mallory", "admin"),
}


@given(st.integers(min_value=0, max_value=4), st.sampled_from(sorted(FIELDS)))
def test_editing_any_field_of_any_entry_is_named_at_that_entry(index: int, field: str) -> None:
    entries = chain(5)
    entries[index] = replace(entries[index], **{field: FIELDS[field]})
    check(verify_chain(entries, KEY, anchor_of(chain(5))), index, c.MAC)


@pytest.mark.parametrize("index", [0, 2, 4])
@pytest.mark.parametrize("forge", [plain_sha256, wrong_key], ids=["plain-sha256", "wrong-key"])
def test_an_edit_re_hashed_from_there_on_is_named_at_the_edited_entry(index: int, forge) -> None:  # type: ignore[no-untyped-def]
    honest = chain(5)
    edited = list(honest)
    edited[index] = replace(honest[index], condition="opened and resealed")
    forged = reseal(edited, index, forge)
    # even with the order's anchor moved to the forged head (table write access), the MAC names the edit
    for anchor in (anchor_of(honest), anchor_of(forged)):
        check(verify_chain(forged, KEY, anchor), index, c.MAC)


@pytest.mark.parametrize("forge", [plain_sha256, wrong_key], ids=["plain-sha256", "wrong-key"])
def test_a_full_re_hash_of_every_entry_is_named_at_entry_0(forge) -> None:  # type: ignore[no-untyped-def]
    forged = reseal(chain(4), 0, forge)
    check(verify_chain(forged, KEY, anchor_of(forged)), 0, c.MAC)


def test_re_sealing_under_a_key_id_the_deployment_does_not_trust_is_named() -> None:
    forged = chain(3, key=ATTACKER)  # a complete, self-consistent chain under the attacker's key
    check(verify_chain(forged, KEY, anchor_of(forged)), 0, c.UNKNOWN_KEY)
    relabelled = reseal([replace(e, key_id=KEY.current_key_id()) for e in forged], 0, wrong_key)
    check(verify_chain(relabelled, KEY, anchor_of(relabelled)), 0, c.MAC)


@pytest.mark.parametrize("index", [1, 2, 3])
def test_deleting_a_middle_entry_names_the_missing_entry(index: int) -> None:
    honest = chain(5)
    trimmed = honest[:index] + honest[index + 1 :]
    check(verify_chain(trimmed, KEY, anchor_of(honest)), index, c.SEQUENCE)
    # renumbering the rest (to hide the gap) breaks the link at the same place
    renumbered = trimmed[:index] + [replace(e, seq=e.seq - 1) for e in trimmed[index:]]
    check(verify_chain(renumbered, KEY, anchor_of(honest)), index, c.LINK)
    # ...and relinking too leaves the MAC of the renumbered entry wrong
    relinked = reseal(renumbered, index, plain_sha256)
    check(verify_chain(relinked, KEY, anchor_of(relinked)), index, c.MAC)


@pytest.mark.parametrize("keep", [0, 1, 3])
def test_deleting_the_tail_is_caught_by_the_anchor_at_the_first_missing_entry(keep: int) -> None:
    honest = chain(4)
    trimmed = honest[:keep]
    assert verify_chain(trimmed, KEY, anchor_of(trimmed)).valid  # consistent with itself: why an anchor is needed
    check(verify_chain(trimmed, KEY, anchor_of(honest)), keep, c.TAIL_MISSING)


def test_a_tail_trim_with_the_order_anchor_rolled_back_is_caught_by_the_event_checkpoint() -> None:
    honest = chain(4)
    checkpoint = anchor_of(honest)  # as carried in VerdictRecorded
    trimmed = honest[:2]
    rolled_back = anchor_of(trimmed)  # a table writer can roll the order's anchor back to an earlier, genuine state
    assert verify_chain(trimmed, KEY, rolled_back).valid
    check(verify_chain(trimmed, KEY, rolled_back, checkpoints=[checkpoint]), 2, c.TAIL_MISSING)


@pytest.mark.parametrize(("i", "j"), [(0, 1), (1, 2), (1, 3)])
def test_a_reorder_is_named_at_the_first_displaced_entry(i: int, j: int) -> None:
    honest = chain(4)
    swapped = list(honest)
    swapped[i], swapped[j] = honest[j], honest[i]
    check(verify_chain(swapped, KEY, anchor_of(honest)), i, c.SEQUENCE)
    # swapping contents but keeping each position's sequence number breaks the link instead
    renumbered = [replace(e, seq=k) for k, e in enumerate(swapped)]
    check(verify_chain(renumbered, KEY, anchor_of(honest)), i, c.LINK)


@pytest.mark.parametrize("index", [0, 2, 4])
@pytest.mark.parametrize("forge", [plain_sha256, wrong_key], ids=["plain-sha256", "wrong-key"])
def test_an_inserted_entry_is_named(index: int, forge) -> None:  # type: ignore[no-untyped-def]
    honest = chain(4)
    fake = replace(honest[min(index, 3)], from_party="planted", seq=index)
    inserted = honest[:index] + [fake] + [replace(e, seq=e.seq + 1) for e in honest[index:]]
    forged = reseal(inserted, index, forge)
    check(verify_chain(forged, KEY, anchor_of(forged)), index, c.MAC)


def test_a_duplicated_entry_is_named() -> None:
    honest = chain(3)
    check(verify_chain([*honest[:2], honest[1], honest[2]], KEY, anchor_of(honest)), 2, c.SEQUENCE)


def test_an_entry_copied_from_another_orders_chain_is_named() -> None:
    mine, theirs = chain(3), chain(3, order_id="o2")
    # the repository reads the order id from the partition key: the copy is checked as one of o1's entries
    copied = [mine[0], replace(theirs[1], order_id="o1", prev_mac=mine[0].mac), mine[2]]
    check(verify_chain(copied, KEY, anchor_of(mine), order_id="o1"), 1, c.MAC)
    check(verify_chain([mine[0], theirs[1], mine[2]], KEY, anchor_of(mine), order_id="o1"), 1, c.ORDER)


def test_entries_without_any_anchor_are_not_trusted() -> None:
    check(verify_chain(chain(2), KEY, None), 0, c.NO_ANCHOR)


def test_an_anchor_whose_head_does_not_match_names_the_last_entry() -> None:
    entries = chain(3)
    check(verify_chain(entries, KEY, Anchor(3, "e" * 64)), 2, c.HEAD_MISMATCH)


# ------------------------------------------------------------------------------------------------ with the key
def test_with_the_key_a_rewrite_and_re_seal_still_fails_the_published_checkpoint() -> None:
    honest = chain(5)
    checkpoint = anchor_of(honest)  # VerdictRecorded carried (5, head)
    edited = list(honest)
    edited[1] = replace(honest[1], condition="opened")
    forged = reseal(edited, 1, lambda e: KEY.mac(e.key_id, e.digest()))
    assert verify_chain(forged, KEY, anchor_of(forged)).valid  # the table alone cannot tell any more
    check(verify_chain(forged, KEY, anchor_of(forged), checkpoints=[checkpoint]), 4, c.CHECKPOINT)


def test_with_the_key_an_appended_entry_that_skips_the_anchor_is_named() -> None:
    honest = chain(3)
    extra = chain(4)[3]
    check(verify_chain([*honest, extra], KEY, anchor_of(honest)), 3, c.BEYOND_ANCHOR)


def test_an_earlier_checkpoint_must_still_be_on_the_chain() -> None:
    honest = chain(4)
    early = Anchor(2, honest[1].mac)
    assert verify_chain(honest, KEY, anchor_of(honest), checkpoints=[early]).valid
    check(verify_chain(honest, KEY, anchor_of(honest), checkpoints=[Anchor(2, "d" * 64)]), 1, c.CHECKPOINT)


# ------------------------------------------------------------------------------------------------ keys and rotation
def test_rotation_keeps_old_entries_verifiable_while_the_old_key_is_trusted() -> None:
    old, new = "o" * 40, "n" * 40
    before = chain(2, key=LocalHmacKey(old))
    rotated = LocalHmacKey(new, previous=[old])
    after = next_entry(
        before[-1],
        key=rotated,
        order_id="o1",
        actor=LAB,
        from_party="a",
        to_party="b",
        at=T0,
        location="bench",
        condition="ok",
    )
    entries = [*before, after]
    assert after.key_id == key_id_for(new) != before[0].key_id == key_id_for(old)
    assert verify_chain(entries, rotated, anchor_of(entries)).valid
    check(verify_chain(entries, LocalHmacKey(new), anchor_of(entries)), 0, c.UNKNOWN_KEY)


def test_the_local_key_refuses_short_secrets_and_odd_macs() -> None:
    with pytest.raises(ValueError, match="at least"):
        LocalHmacKey("short")
    e = chain(1)[0]
    assert KEY.verify(e.key_id, e.digest(), e.mac)
    assert not KEY.verify(e.key_id, e.digest(), "é" * 64)
    assert not KEY.verify("local:unknown", e.digest(), e.mac)
    with pytest.raises(KeyError):
        KEY.mac("local:unknown", b"x")
