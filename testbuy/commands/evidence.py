"""``testbuy evidence export | verify | public-key``: evidence packages (issue 10 item 5).

``export`` asks the API to build a sample's or a seller's package, downloads the zip from the pre-signed URL it
answers, checks that the zip's manifest is the one the API announced and prints the file's path on the last line.
``verify`` works offline, with only the package and the public key (PEM) given with ``--public-key``; without one it
checks the package against the key the package names itself and says so: that proves the package is unchanged since
it was signed, not who signed it. Exit codes of ``verify``: 0 the package verifies; 1 it does not (each problem is
named: changed, missing, added, bad_signature, bad_manifest, bad_archive, custody); 2 usage (an unreadable file).
"""

from __future__ import annotations

import hashlib
import io
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

import typer

from testbuy.commands.common import (
    API_OPT,
    JSON_OPT,
    NEGATIVE,
    OK,
    PROFILE_OPT,
    TOKEN_OPT,
    UNAVAILABLE,
    USAGE,
    connect,
    emit_json,
    err,
    fail,
    out,
    q,
)

evidence = typer.Typer(no_args_is_help=True, help="Export and verify signed evidence packages.")
ENF = "enforcement"


def download(answer: dict[str, Any]) -> bytes:
    """The zip an export answered (``url``), checked to hold the manifest it announced (``manifest_sha256``).
    Raises ``OSError`` when the download fails, ``ValueError`` when it is not that package. Also for the demo:
    ``data = download(client.call("POST", f"/samples/{order_id}/evidence-package"))``."""
    try:
        with urllib.request.urlopen(answer["url"], timeout=120) as resp:  # noqa: S310 # nosec B310 - the API's URL
            data: bytes = resp.read()
    except (urllib.error.URLError, TimeoutError) as exc:
        raise OSError(str(exc)) from exc
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            manifest_sha = hashlib.sha256(zf.read("manifest.json")).hexdigest()
    except (zipfile.BadZipFile, KeyError) as exc:
        raise ValueError(f"the download is not an evidence package: {exc}") from None
    if manifest_sha != answer["manifest_sha256"]:
        raise ValueError(f"the downloaded manifest is {manifest_sha}, the API announced {answer['manifest_sha256']}")
    return data


@evidence.command("export")
def export(
    order: str | None = typer.Option(None, "--order", help="a sample's order id"),
    seller: str | None = typer.Option(None, "--seller", help="a seller id (with --program)"),
    program: str | None = typer.Option(
        None, "--program", "-p", envvar="TESTBUY_PROGRAM", help="the seller's programme"
    ),
    out_file: Path | None = typer.Option(None, "--out", help="where the zip goes (default: ./evidence-<manifest>.zip)"),
    as_json: bool = JSON_OPT,
    profile: str | None = PROFILE_OPT,
    api_url: str | None = API_OPT,
    token: str | None = TOKEN_OPT,
) -> None:
    """Export a sample's (--order) or a seller's (--seller --program) evidence package and download it; the last
    line is the zip's path."""
    if (order is None) == (seller is None):
        fail(USAGE, "give --order ID, or --seller ID with --program P", as_json=as_json)
    if seller is not None and not program:
        fail(USAGE, "--seller needs --program (or $TESTBUY_PROGRAM)", as_json=as_json)
    api = connect(api_url=api_url, token=token, profile=profile, as_json=as_json, role=ENF)
    if order is not None:
        path = f"/samples/{q(order)}/evidence-package"
    else:
        path = f"/programs/{q(str(program))}/sellers/{q(str(seller))}/evidence-package"
    body = api.call("POST", path, expect=(201,))
    try:
        data = download(body)
    except OSError as exc:
        fail(UNAVAILABLE, f"cannot download the package from the pre-signed URL: {exc}", as_json=as_json)
    except ValueError as exc:
        fail(NEGATIVE, str(exc), as_json=as_json)
    target = out_file or Path(f"evidence-{body['kind']}-{body['manifest_sha256'][:16]}.zip")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    if as_json:
        emit_json({**body, "path": str(target)})
        return
    out.print(
        f"{body['kind']} package of {body['subject_id']}: {body['files']} files, {len(data):,} bytes",
        soft_wrap=True,
        markup=False,
    )
    print(f"manifest sha256 {body['manifest_sha256']}")
    print(f"signed by {body['key_id']}")
    print(target)


@evidence.command("public-key")
def public_key(
    out_file: Path | None = typer.Option(None, "--out", help="write the PEM here (default: print it)"),
    as_json: bool = JSON_OPT,
    profile: str | None = PROFILE_OPT,
    api_url: str | None = API_OPT,
    token: str | None = TOKEN_OPT,
) -> None:
    """Fetch the public key (PEM) that verifies evidence packages (once; keep it to verify offline)."""
    api = connect(api_url=api_url, token=token, profile=profile, as_json=as_json, role=ENF)
    body = api.call("GET", "/evidence/public-key")
    if as_json:
        emit_json(body)
        return
    if out_file is None:
        print(body["public_key_pem"], end="")
        return
    out_file.write_text(body["public_key_pem"])
    print(f"key {body['key_id']} ({body['algorithm']})")
    print(out_file)


@evidence.command("verify")
def verify(
    bundle: Path = typer.Argument(..., help="the package (zip)"),
    public_key_file: Path | None = typer.Option(
        None, "--public-key", help="the trusted public key (PEM, from `testbuy evidence public-key`)"
    ),
    as_json: bool = JSON_OPT,
) -> None:
    """Check a package offline: the signature under the trusted key, every file's SHA-256, no file missing or added,
    and the custody chain's links and anchor (its HMACs need the custody key and are not checked offline). Exit 0:
    it verifies; 1: it does not (each problem named); 2: a file cannot be read."""
    from chalicelib.domain.evidence_package import verify_bundle

    try:
        data = bundle.read_bytes()
        key = public_key_file.read_bytes() if public_key_file is not None else None
    except OSError as exc:
        fail(USAGE, f"cannot read {exc.filename}: {exc.strerror}", as_json=as_json)
    report = verify_bundle(data, key)
    if as_json:
        emit_json(
            {
                "valid": report.valid,
                "integrity_only": report.integrity_only,
                "manifest_sha256": report.manifest_sha256,
                "key_id": report.key_id,
                "files": report.files,
                "problems": [{"kind": p.kind, "path": p.path, "detail": p.detail} for p in report.problems],
            }
        )
        raise typer.Exit(OK if report.valid else NEGATIVE)
    for p in report.problems:
        err.print(f"{p.kind}: {p.path}: {p.detail}", soft_wrap=True, markup=False, highlight=False)
    if not report.valid:
        err.print(f"the package does NOT verify: {len(report.problems)} problem(s)", soft_wrap=True, markup=False)
        raise typer.Exit(NEGATIVE)
    print(f"manifest sha256 {report.manifest_sha256}")
    if report.integrity_only:
        print(
            "INTEGRITY ONLY: no --public-key given; checked against the key the package names itself. It is "
            "unchanged since signing, but this does not prove who signed it."
        )
    else:
        print(f"signature verifies under the trusted key {report.key_id}")
    print(f"verified: {report.files} files, custody chains link and match their anchors")
