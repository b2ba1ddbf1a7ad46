"""``testbuy evidence verify`` offline (issue 10 item 5): exit codes and what it prints, on packages built with the
fake signer (no network, no stack)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

from typer.testing import CliRunner

from chalicelib.domain import evidence_package as ep
from testbuy.cli import app
from tests.fakes import FakeSigner
from tests.unit.test_evidence_package import AT, FILES

runner = CliRunner()


def write_package(tmp: Path, signer: FakeSigner) -> tuple[Path, Path]:
    pkg = ep.assemble(FILES, kind="sample", subject_id="o1", created_at=AT, signer=signer)
    bundle, key = tmp / "pkg.zip", tmp / "key.pem"
    bundle.write_bytes(pkg.data)
    key.write_text(ep.public_key_pem(signer.public_key_der()))
    return bundle, key


def test_a_valid_package_exits_0_and_says_which_key(tmp_path: Path) -> None:
    bundle, key = write_package(tmp_path, FakeSigner())
    r = runner.invoke(app, ["evidence", "verify", str(bundle), "--public-key", str(key)])
    assert r.exit_code == 0, r.output
    assert "signature verifies under the trusted key fake-signing-key" in r.stdout and "INTEGRITY" not in r.stdout


def test_without_a_key_it_says_integrity_only(tmp_path: Path) -> None:
    bundle, _ = write_package(tmp_path, FakeSigner())
    r = runner.invoke(app, ["evidence", "verify", str(bundle)])
    assert r.exit_code == 0 and "INTEGRITY ONLY" in r.stdout


def test_a_tampered_package_exits_1_naming_each_file(tmp_path: Path) -> None:
    bundle, key = write_package(tmp_path, FakeSigner())
    with zipfile.ZipFile(bundle) as zf:
        files = {n: zf.read(n) for n in zf.namelist()}
    files["policy.json"] = files["policy.json"].replace(b"2026", b"2027")
    del files["samples/o1/order.json"]
    files["planted.txt"] = b"x"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for n, b in files.items():
            zf.writestr(n, b)
    bundle.write_bytes(buf.getvalue())
    r = runner.invoke(app, ["evidence", "verify", str(bundle), "--public-key", str(key), "--json"])
    assert r.exit_code == 1
    body = json.loads(r.stdout)
    assert not body["valid"] and {(p["kind"], p["path"]) for p in body["problems"]} == {
        ("changed", "policy.json"),
        ("missing", "samples/o1/order.json"),
        ("added", "planted.txt"),
    }


def test_the_wrong_key_exits_1_with_a_bad_signature(tmp_path: Path) -> None:
    bundle, _ = write_package(tmp_path, FakeSigner(secret=5))
    (tmp_path / "other").mkdir()
    _, other = write_package(tmp_path / "other", FakeSigner(secret=6))
    r = runner.invoke(app, ["evidence", "verify", str(bundle), "--public-key", str(other)])
    assert r.exit_code == 1 and "bad_signature: manifest.sig.json" in r.stderr


def test_an_unreadable_file_is_a_usage_error(tmp_path: Path) -> None:
    r = runner.invoke(app, ["evidence", "verify", str(tmp_path / "nope.zip")])
    assert r.exit_code == 2
