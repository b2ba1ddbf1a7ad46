"""Finance use cases: spend reports and reconciliation, computed from the immutable ledger journal."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from typing import Any, Literal

from chalicelib.domain.ledger import Balance, JournalEntry, Op, total
from chalicelib.services.deps import Deps

GroupBy = Literal["program", "round", "category", "seller", "month"]
GROUP_ATTR = {"round": "round_id", "category": "category", "seller": "seller_id", "month": "month"}
COLUMNS = ("funded", "reserved", "captured", "recovered", "spent")
_SNAPSHOT_ATTEMPTS = 5


def _snapshot(d: Deps, program_id: str) -> tuple[list[JournalEntry], Balance]:
    """The journal and the balance as of one moment.

    Each operation writes its journal line and the balance in one transaction and lines are never removed, so if
    the journal has the same lines before and after the balance is read, no operation committed in between and the
    two agree exactly. Under a steady stream of writes the last read is returned (its drift is then transient).
    """
    journal = d.ledger.journal(program_id)
    for _ in range(_SNAPSHOT_ATTEMPTS):
        balance = d.ledger.balance(program_id)
        again = d.ledger.journal(program_id)
        if len(again) == len(journal):
            return again, balance
        journal = again
    return journal, d.ledger.balance(program_id)


def spend_report(d: Deps, program_id: str, group_by: GroupBy = "program") -> dict[str, Any]:
    """Funded, reserved (held now), captured, recovered and spent (captured - recovered) per group.

    Every figure is a sum of journal deltas, so the totals equal the balances to the minor unit.
    """
    program = d.programs.get_program(program_id)
    journal, stored = _snapshot(d, program_id)
    rows: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(COLUMNS, 0))
    for e in journal:
        if group_by == "program":
            group = program_id
        elif group_by == "month":
            group = str(e.attributes.get("month", e.at[:7]))
        else:
            missing = "(funding)" if e.op is Op.FUND else "(unattributed)"
            group = str(e.attributes.get(GROUP_ATTR[group_by], missing))
        row = rows[group]
        row["funded"] += e.d_funded
        row["reserved"] += e.d_reserved
        row["captured"] += e.d_captured
        row["recovered"] += e.d_recovered
        row["spent"] += e.d_captured - e.d_recovered
    totals = dict.fromkeys(COLUMNS, 0)
    for row in rows.values():
        for k in COLUMNS:
            totals[k] += row[k]
    balance = _balance_dict(stored)
    return {
        "program_id": program_id,
        "currency": program.currency,
        "group_by": group_by,
        "rows": [{"group": g, **rows[g]} for g in sorted(rows)],
        "totals": totals,
        "balance": balance,
        "reconciled": all(totals[k] == balance[k] for k in COLUMNS),
    }


def report_csv(report: dict[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([report["group_by"], *COLUMNS, "currency"])
    for row in report["rows"]:
        writer.writerow([_cell(row["group"]), *(row[k] for k in COLUMNS), report["currency"]])
    writer.writerow(["TOTAL", *(report["totals"][k] for k in COLUMNS), report["currency"]])
    return out.getvalue()


def _cell(text: str) -> str:
    """Keep spreadsheets from running an imported id as a formula (CSV injection)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _balance_dict(b: Balance) -> dict[str, int]:
    return {
        "funded": b.funded,
        "available": b.available,
        "reserved": b.reserved,
        "captured": b.captured,
        "recovered": b.recovered,
        "spent": b.spent,
    }


def reconcile(d: Deps, program_id: str) -> dict[str, Any]:
    """Recompute the balance from the journal and compare it with the stored balance; drift must be zero."""
    program = d.programs.get_program(program_id)
    journal, stored = _snapshot(d, program_id)
    recomputed = total(journal)
    drift = {
        k: getattr(stored, k) - getattr(recomputed, k)
        for k in ("funded", "available", "reserved", "captured", "recovered")
    }
    invariant = stored.available + stored.reserved + stored.captured - stored.recovered == stored.funded
    invariant = invariant and min(stored.available, stored.reserved, stored.captured, stored.recovered) >= 0
    unbalanced = [e.key for e in journal if not e.balanced]
    return {
        "program_id": program_id,
        "currency": program.currency,
        "stored": _balance_dict(stored),
        "recomputed": _balance_dict(recomputed),
        "drift": drift,
        "journal_entries": len(journal),
        "unbalanced_entries": unbalanced,
        "invariant_holds": invariant,
        "reconciled": invariant and not unbalanced and all(v == 0 for v in drift.values()),
    }
