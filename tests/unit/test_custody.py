import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from chalicelib.domain.custody import GENESIS, next_entry, verify_chain

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def chain(n: int) -> list:
    entries = []
    for i in range(n):
        entries.append(
            next_entry(
                entries[-1] if entries else None,
                order_id="o1",
                from_party=f"p{i}",
                to_party=f"p{i + 1}",
                at=T0 + timedelta(hours=i),
                location="dock",
                condition="sealed",
                evidence=[f"{i:064x}"],
            )
        )
    return entries


def test_a_fresh_chain_verifies_and_links_each_entry_to_the_previous() -> None:
    entries = chain(4)
    report = verify_chain(entries)
    assert report.valid and report.length == 4 and report.head == entries[-1].entry_hash
    assert entries[0].prev_hash == GENESIS
    assert all(b.prev_hash == a.entry_hash for a, b in itertools.pairwise(entries))


@given(st.integers(min_value=0, max_value=4), st.sampled_from(["location", "condition", "to_party", "from_party"]))
def test_editing_any_field_of_any_entry_is_detected_at_that_entry(index: int, field: str) -> None:
    entries = chain(5)
    entries[index] = replace(entries[index], **{field: "tampered"})
    report = verify_chain(entries)
    assert not report.valid
    assert report.first_bad_seq == index


def test_recomputing_the_hash_of_an_edited_entry_breaks_the_next_link() -> None:
    entries = chain(3)
    edited = replace(entries[1], condition="opened")
    entries[1] = replace(edited, entry_hash=edited.compute_hash())
    report = verify_chain(entries)
    assert not report.valid and report.first_bad_seq == 2 and report.reason == "previous-hash link broken"


def test_removing_or_reordering_entries_is_detected() -> None:
    entries = chain(4)
    assert verify_chain(entries[:1] + entries[2:]).first_bad_seq == 2
    assert not verify_chain([entries[1], entries[0], *entries[2:]]).valid
