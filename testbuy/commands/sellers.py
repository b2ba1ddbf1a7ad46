"""``testbuy sellers import FILE``: a CSV or JSON-lines seller file into a programme's frame, in batches.

- Each row is checked here with the API's own model (``SellerIn``, strict, as the server parses it) and duplicates of
  an earlier row's seller id are refused: a bad row is reported with its line number, field and reason and left out;
  the good rows are imported.
- The API takes at most ``MAX_IMPORT_BATCH`` sellers per call and refuses a batch as a whole: when it refuses rows
  (its details name ``sellers[i]``), those rows are reported as rejected and the rest of the batch is sent again.
- An import is an upsert by seller id, so importing a file again changes nothing that is already there. ``--resume``
  also skips the batches already accepted, from a state file next to the input (``<file>.import-state.json``),
  valid while the file, the programme and the batch size are unchanged.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from testbuy.commands.common import (
    API_OPT,
    INTERRUPTED,
    JSON_OPT,
    NEGATIVE,
    OK,
    PROFILE_OPT,
    PROGRAM_OPT,
    TOKEN_OPT,
    USAGE,
    Api,
    connect,
    emit_json,
    err,
    fail,
    out,
    q,
)

sellers = typer.Typer(no_args_is_help=True, help="The sampling frame: import sellers (role program_manager).")

TOP_LEVEL = ("seller_id", "category", "expected_cost", "risk", "eligible", "linked_sellers")
# rings (issue 10 item 3): fingerprint hashes, never raw values (docs/decisions.md "Rings and leads")
FINGERPRINT_COLUMNS = tuple(f"fingerprints.{k}" for k in ("identity_document", "payment_account", "address", "device"))


@dataclass
class Row:
    line: int
    data: dict[str, Any] | None
    seller_id: str | None = None


@dataclass
class Rejected:
    line: int
    seller_id: str | None
    field: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"line": self.line, "seller_id": self.seller_id, "field": self.field, "reason": self.reason}


@dataclass
class Parsed:
    rows: list[Row] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)


class InputError(ValueError):
    """The file as a whole cannot be read (unknown format or columns)."""


def _signal_kinds() -> dict[str, str]:
    from chalicelib.domain.models import SellerSignals

    kinds: dict[str, str] = {}
    for name, info in SellerSignals.model_fields.items():
        text = str(info.annotation)
        kinds[name] = "bool" if "bool" in text else "int" if "int" in text else "float"
    return kinds


def _convert(kind: str, text: str) -> Any:
    if kind == "int":
        return int(text)
    if kind == "float":
        return float(text)
    low = text.strip().lower()
    if low in ("true", "1", "yes", "y"):
        return True
    if low in ("false", "0", "no", "n"):
        return False
    raise ValueError(f"must be true or false, got {text!r}")


def _csv_rows(path: Path, parsed: Parsed) -> list[tuple[int, dict[str, Any]]]:
    kinds = _signal_kinds()
    rows: list[tuple[int, dict[str, Any]]] = []
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in reader.fieldnames or []]
        reader.fieldnames = header
        unknown = [
            h
            for h in header
            if h not in TOP_LEVEL and h.removeprefix("signals.") not in kinds and h not in FINGERPRINT_COLUMNS
        ]
        if unknown or "seller_id" not in header:
            raise InputError(
                f"{path}: unknown columns {unknown}; columns are {list(TOP_LEVEL)} and the signals "
                f"{sorted(kinds)} (also as signals.<name>) and the fingerprints {list(FINGERPRINT_COLUMNS)} "
                "(SHA-256 hashes, ';'-separated); seller_id, category and expected_cost are required"
            )
        line = reader.line_num
        for raw in reader:
            start, line = line + 1, reader.line_num
            data: dict[str, Any] = {}
            signals: dict[str, Any] = {}
            fingerprints: dict[str, list[str]] = {}
            problem: tuple[str, str] | None = None
            for key, value in raw.items():
                if key is None or value is None or value.strip() == "":
                    continue
                value = value.strip()
                name = key.removeprefix("signals.")
                try:
                    if key == "expected_cost":
                        data[key] = int(value)
                    elif key == "risk":
                        data[key] = float(value)
                    elif key == "eligible":
                        data[key] = _convert("bool", value)
                    elif key == "linked_sellers":
                        data[key] = [s.strip() for s in value.replace("|", ";").split(";") if s.strip()]
                    elif key in TOP_LEVEL:
                        data[key] = value
                    elif key in FINGERPRINT_COLUMNS:  # rings (issue 10): hashes only, checked by SellerIn
                        fingerprints[key.removeprefix("fingerprints.")] = [
                            v.strip() for v in value.split(";") if v.strip()
                        ]
                    else:
                        signals[name] = _convert(kinds[name], value)
                except ValueError:
                    want = {"int": "an integer", "float": "a number", "bool": "true or false"}
                    kind = "int" if key == "expected_cost" else "float" if key == "risk" else kinds.get(name, "bool")
                    problem = (key, f"must be {want[kind]}, got {value!r}")
                    break
            if signals:
                data["signals"] = signals
            if fingerprints:
                data["fingerprints"] = fingerprints
            if problem is not None:
                parsed.rejected.append(Rejected(start, data.get("seller_id") or raw.get("seller_id"), *problem))
                continue
            rows.append((start, data))
    return rows


def _jsonl_rows(path: Path, parsed: Parsed) -> list[tuple[int, dict[str, Any]]]:
    rows: list[tuple[int, dict[str, Any]]] = []
    with path.open(encoding="utf-8") as fh:
        for number, text in enumerate(fh, start=1):
            if not text.strip():
                continue
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                parsed.rejected.append(Rejected(number, None, "(line)", f"not valid JSON: {exc.msg}"))
                continue
            if not isinstance(data, dict):
                parsed.rejected.append(Rejected(number, None, "(line)", "each line must be a JSON object"))
                continue
            rows.append((number, data))
    return rows


def read_sellers(path: Path) -> Parsed:
    """Every row of the file, checked against ``SellerIn``; bad rows and repeated seller ids are in ``rejected``."""
    from pydantic import ValidationError

    from chalicelib.domain.models import SellerIn

    parsed = Parsed()
    suffix = path.suffix.lower()
    if suffix == ".csv":
        raw = _csv_rows(path, parsed)
    elif suffix in (".jsonl", ".ndjson", ".json"):
        raw = _jsonl_rows(path, parsed)
    else:
        raise InputError(f"{path}: name a .csv or .jsonl (JSON lines) file")
    first_line: dict[str, int] = {}
    for line, data in raw:
        sid = data.get("seller_id") if isinstance(data.get("seller_id"), str) else None
        try:
            SellerIn.model_validate_json(json.dumps(data), strict=True)
        except ValidationError as exc:
            e = exc.errors(include_url=False, include_input=False)[0]
            where = ".".join(str(p) for p in e["loc"]) or "(row)"
            parsed.rejected.append(Rejected(line, sid, where, e["msg"]))
            continue
        assert sid is not None
        if sid in first_line:
            parsed.rejected.append(Rejected(line, sid, "seller_id", f"repeats the seller of line {first_line[sid]}"))
            continue
        first_line[sid] = line
        parsed.rows.append(Row(line, data, sid))
    parsed.rejected.sort(key=lambda r: r.line)
    return parsed


def state_path(path: Path) -> Path:
    return path.with_name(path.name + ".import-state.json")


def _fingerprint(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _save(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(path)


def _send(api: Api, program_id: str, batch: list[Row]) -> tuple[int, list[Rejected]]:
    """Send one batch; rows the API refuses are reported and the rest sent again. Returns (imported, rejected)."""
    rejected: list[Rejected] = []
    pending = list(batch)
    while pending:
        status, payload, _ = _request(
            api, "POST", f"/programs/{q(program_id)}/sellers", {"sellers": [r.data for r in pending]}
        )
        if status == 200:
            return int(payload["imported"]), rejected
        bad = _rows_named(status, payload, len(pending))
        if not bad:
            api.refused(status, payload)
        for index, reason_field, reason in bad:
            row = pending[index]
            rejected.append(Rejected(row.line, row.seller_id, reason_field, f"refused by the API: {reason}"))
        drop = {i for i, _, _ in bad}
        pending = [r for i, r in enumerate(pending) if i not in drop]
    return 0, rejected


def _request(api: Api, method: str, path: str, body: Any) -> tuple[int, Any, Any]:
    import urllib.error

    try:
        result: tuple[int, Any, Any] = api.client.request(method, path, body)
        return result
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
        from testbuy.commands.common import UNAVAILABLE

        fail(
            UNAVAILABLE,
            f"cannot reach {api.client.base_url}: {getattr(exc, 'reason', exc)}; run again with --resume",
            as_json=api.as_json,
        )


def _rows_named(status: int, payload: Any, size: int) -> list[tuple[int, str, str]]:
    """(row index, field, reason) for each row a 400 answer names as ``sellers[i]...``."""
    import re

    if status != 400 or not isinstance(payload, dict):
        return []
    details = (payload.get("error") or {}).get("details") or []
    found: dict[int, tuple[int, str, str]] = {}
    for d in details if isinstance(details, list) else []:
        if not isinstance(d, dict):
            continue
        m = re.match(r"^sellers[.\[](\d+)\]?\.?(.*)$", str(d.get("field", "")))
        if m and int(m.group(1)) < size:
            i = int(m.group(1))
            found.setdefault(i, (i, m.group(2) or "(row)", str(d.get("message", "refused"))))
    return sorted(found.values())


@sellers.command("import")
def import_sellers(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True, help="a .csv or .jsonl file"),
    program_id: str = PROGRAM_OPT,
    batch_size: int | None = typer.Option(None, min=1, help="sellers per request (default and maximum: the API's)"),
    resume: bool = typer.Option(False, "--resume", help="skip the batches an earlier run of this file got accepted"),
    as_json: bool = JSON_OPT,
    profile: str | None = PROFILE_OPT,
    api_url: str | None = API_OPT,
    token: str | None = TOKEN_OPT,
) -> None:
    """Import sellers (CSV with a header, or JSON lines: one SellerIn object a line) into a programme's frame.

    Exit 0 when every row was imported, 1 when some rows were rejected (each is listed with its line number, field
    and reason; the other rows were imported)."""
    from chalicelib.domain.models import MAX_IMPORT_BATCH

    size = min(batch_size or MAX_IMPORT_BATCH, MAX_IMPORT_BATCH)
    if batch_size is not None and batch_size > MAX_IMPORT_BATCH:
        fail(USAGE, f"--batch-size is at most {MAX_IMPORT_BATCH} (the API's limit)", as_json=as_json)
    try:
        parsed = read_sellers(file)
    except (InputError, UnicodeDecodeError, csv.Error) as exc:
        fail(USAGE, str(exc), as_json=as_json)
    if not parsed.rows and not parsed.rejected:
        fail(USAGE, f"{file} holds no sellers", as_json=as_json)
    api = connect(api_url=api_url, token=token, profile=profile, as_json=as_json, role="program_manager")
    batches = [parsed.rows[i : i + size] for i in range(0, len(parsed.rows), size)]
    spath = state_path(file)
    key = {"program_id": program_id, "api_url": api.client.base_url, "sha256": _fingerprint(file), "batch_size": size}
    state: dict[str, Any] = {**key, "done": [], "imported": 0, "rejected": []}
    skipped = 0
    if resume and spath.exists():
        try:
            old = json.loads(spath.read_text())
        except ValueError:
            old = {}
        if all(old.get(k) == v for k, v in key.items()):
            state = old
            skipped = len(state["done"])
        else:
            err.print(f"[yellow]{spath} is for another file, programme or batch size: importing everything[/]")
    rejected = [*parsed.rejected, *(Rejected(**r) for r in state["rejected"])]
    done = set(state["done"])
    try:
        with Progress(
            TextColumn("importing"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
            disable=not err.is_terminal,
        ) as progress:
            task = progress.add_task("sellers", total=len(parsed.rows))
            for index, batch in enumerate(batches):
                if index in done:
                    progress.advance(task, len(batch))
                    continue
                imported, refused = _send(api, program_id, batch)
                rejected.extend(refused)
                state["imported"] += imported
                state["done"].append(index)
                state["rejected"].extend(r.as_dict() for r in refused)
                try:
                    _save(spath, state)
                except OSError as exc:  # a read-only directory: the import goes on, --resume will not know this batch
                    err.print(f"[yellow]cannot record progress in {spath}: {exc}[/]", soft_wrap=True)
                progress.advance(task, len(batch))
                if not err.is_terminal and not as_json:
                    err.print(f"batch {index + 1}/{len(batches)}: {imported} imported", soft_wrap=True)
    except KeyboardInterrupt:
        err.print(f"interrupted: {state['imported']} sellers imported so far; run again with --resume", soft_wrap=True)
        raise typer.Exit(INTERRUPTED) from None
    rejected.sort(key=lambda r: r.line)
    report = {
        "program_id": program_id,
        "file": str(file),
        "imported": state["imported"],
        "rejected": [r.as_dict() for r in rejected],
        "batches": len(batches),
        "batches_skipped": skipped,
        "state_file": str(spath),
    }
    if as_json:
        emit_json(report)
    else:
        out.print(
            f"{report['imported']} sellers imported into {program_id} in {len(batches)} batches"
            + (f" ({skipped} already done, skipped)" if skipped else "")
            + f"; {len(rejected)} rows rejected",
            soft_wrap=True,
        )
        if rejected:
            table = Table(title="rejected rows (fix them and import the file again: imported rows are unchanged)")
            for col in ("line", "seller_id", "field", "reason"):
                table.add_column(col, overflow="fold")
            for r in rejected:
                table.add_row(str(r.line), r.seller_id or "-", r.field, r.reason)
            out.print(table)
    raise typer.Exit(NEGATIVE if rejected else OK)


SAMPLE_SELLERS = 500
SAMPLE_SEED = 42


def write_sample(path: Path, count: int, seed: int) -> int:
    """The sellers of the seeded simulated world (``testbuy.sim.world.generate(count, seed)``) as the platform
    knows them (signals, never the truth), as CSV or JSON lines by the file's extension."""
    from testbuy.sim.world import generate

    payload = generate(count, seed).import_payload()
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        path.write_text("".join(json.dumps(row) + "\n" for row in payload))
        return len(payload)
    kinds = _signal_kinds()
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["seller_id", "category", "expected_cost", "linked_sellers", *kinds])
        for row in payload:
            signals = row.get("signals") or {}
            writer.writerow(
                [
                    row["seller_id"],
                    row["category"],
                    row["expected_cost"],
                    ";".join(row.get("linked_sellers") or []),
                    *(
                        ""
                        if signals.get(k) is None
                        else (str(signals[k]).lower() if kinds[k] == "bool" else signals[k])
                        for k in kinds
                    ),
                ]
            )
    return len(payload)


@sellers.command("sample")
def sample(
    file: Path = typer.Argument(..., dir_okay=False, help="where to write: .csv or .jsonl"),
    count: int = typer.Option(SAMPLE_SELLERS, min=1, help="how many sellers"),
    seed: int = typer.Option(SAMPLE_SEED, help="the simulated world's seed"),
    as_json: bool = JSON_OPT,
) -> None:
    """Write a seller file to try testbuy with: the sellers of the seeded simulated marketplace (the one the local
    stack runs with the same count and seed)."""
    if file.suffix.lower() not in (".csv", ".jsonl", ".ndjson"):
        fail(USAGE, f"{file}: name a .csv or .jsonl file", as_json=as_json)
    n = write_sample(file, count, seed)
    if as_json:
        emit_json({"file": str(file), "sellers": n, "seed": seed})
    else:
        err.print(f"{n} sellers (seed {seed}) written to", soft_wrap=True)
        print(file)
