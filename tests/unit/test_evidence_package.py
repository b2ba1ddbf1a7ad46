"""Evidence packages (issue 10 item 5): manifest, signature and offline verification with a fake signer.

The tamper test is exhaustive: for EVERY file in the package (the manifest and the signature file included) and for
EVERY byte position in it, the byte is changed (xor 0x01; and for ASCII base64/hex characters that xor can yield
another valid character, which is the point) and the zip rebuilt; verification must fail and name that file. The
package built here is small on purpose (a few KB) so that every position is tried, not a sample."""

from __future__ import annotations

import io
import json
import zipfile
from datetime import UTC, datetime

import pytest

from chalicelib.domain import evidence_package as ep
from tests.fakes import FakeSigner

AT = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def chain_doc(n: int = 3) -> bytes:
    entries, prev = [], "0" * 64
    for i in range(n):
        mac = f"{i + 1:064x}"
        entries.append({"seq": i, "prev_mac": prev, "mac": mac, "condition": "sealed"})
        prev = mac
    return json.dumps({"order_id": "o1", "entries": entries, "anchor": {"length": n, "head": prev}}).encode()


FILES = {
    "samples/o1/order.json": b'{"order_id": "o1", "seller_id": "s1"}\n',
    "samples/o1/verdict.json": b'{"verdict": "counterfeit", "method": "XRF"}\n',
    "samples/o1/custody/chain.json": chain_doc(),
    "evidence/" + "ab" * 32: b"\x89PNG photo bytes \x00\xff",
    "policy.json": b'{"policy_version_at_export": "2026-11-29.1"}\n',
}


def package(files: dict[str, bytes] | None = None, signer: FakeSigner | None = None) -> ep.Package:
    return ep.assemble(files or FILES, kind="sample", subject_id="o1", created_at=AT, signer=signer or FakeSigner())


def pem(signer: FakeSigner) -> bytes:
    return ep.public_key_pem(signer.public_key_der()).encode()


def members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def rezip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, body in files.items():
            zf.writestr(name, body)
    return buf.getvalue()


def kinds(report: ep.VerifyReport) -> set[tuple[str, str]]:
    return {(p.kind, p.path) for p in report.problems}


def test_the_original_verifies_under_the_trusted_key_and_lists_every_file() -> None:
    signer = FakeSigner()
    pkg = package(signer=signer)
    report = ep.verify_bundle(pkg.data, pem(signer))
    assert report.valid, report.problems
    assert report.files == len(FILES) and not report.integrity_only and report.key_id == "fake-signing-key"
    inside = members(pkg.data)
    manifest = json.loads(inside[ep.MANIFEST])
    assert [f["path"] for f in manifest["files"]] == sorted(FILES)
    assert all(f["size"] == len(FILES[f["path"]]) for f in manifest["files"])
    assert ep.sha256_hex(inside[ep.MANIFEST]) == pkg.manifest_sha256
    # the signer was asked to sign the manifest's hash (64 ASCII bytes), never the whole manifest
    assert signer.signed == [pkg.manifest_sha256.encode()]


def test_the_same_inputs_give_the_same_manifest() -> None:
    assert package().manifest_sha256 == package().manifest_sha256


def test_another_key_is_a_bad_signature_and_without_a_key_only_integrity_is_checked() -> None:
    pkg = package(signer=FakeSigner(secret=1))
    other = ep.verify_bundle(pkg.data, pem(FakeSigner(secret=2)))
    assert kinds(other) == {(ep.BAD_SIGNATURE, ep.SIGNATURE)}
    embedded = ep.verify_bundle(pkg.data, None)
    assert embedded.valid and embedded.integrity_only


def _tampered(original: dict[str, bytes], path: str, pos: int) -> bytes:
    body = bytearray(original[path])
    body[pos] ^= 0x01
    return rezip({**original, path: bytes(body)})


def _all_positions() -> list[tuple[str, int]]:
    inside = members(package().data)
    return [(path, pos) for path, body in inside.items() for pos in range(len(body))]


SIGNER = FakeSigner()
ORIGINAL = members(package(signer=SIGNER).data)
TRUSTED = pem(SIGNER)


def test_every_single_byte_change_of_every_file_fails_naming_that_file() -> None:
    """Every byte of every file (manifest and signature file included): see the module docstring."""
    positions = _all_positions()
    assert len(positions) > 1000 and {p for p, _ in positions} == {*FILES, ep.MANIFEST, ep.SIGNATURE}
    missed = []
    for path, pos in positions:
        report = ep.verify_bundle(_tampered(ORIGINAL, path, pos), TRUSTED)
        named = {p.path for p in report.problems}
        # a changed manifest is named itself, or as the signature that no longer verifies it
        ok = not report.valid and (path in named or (path == ep.MANIFEST and ep.SIGNATURE in named))
        if not ok:
            missed.append((path, pos, report.problems))
    assert not missed, missed[:5]


@pytest.mark.parametrize("path", sorted(FILES))
def test_a_changed_file_is_named_changed(path: str) -> None:
    report = ep.verify_bundle(_tampered(ORIGINAL, path, 0), TRUSTED)
    assert (ep.CHANGED, path) in kinds(report)


@pytest.mark.parametrize("path", sorted(FILES))
def test_a_removed_file_is_named_missing(path: str) -> None:
    report = ep.verify_bundle(rezip({k: v for k, v in ORIGINAL.items() if k != path}), TRUSTED)
    assert kinds(report) == {(ep.MISSING, path)}


def test_an_added_file_is_named_added() -> None:
    report = ep.verify_bundle(rezip({**ORIGINAL, "evidence/extra.png": b"planted"}), TRUSTED)
    assert kinds(report) == {(ep.ADDED, "evidence/extra.png")}


def test_a_removed_manifest_or_signature_is_named() -> None:
    no_manifest = ep.verify_bundle(rezip({k: v for k, v in ORIGINAL.items() if k != ep.MANIFEST}), TRUSTED)
    assert (ep.BAD_MANIFEST, ep.MANIFEST) in kinds(no_manifest)
    no_sig = ep.verify_bundle(rezip({k: v for k, v in ORIGINAL.items() if k != ep.SIGNATURE}), TRUSTED)
    assert kinds(no_sig) == {(ep.BAD_SIGNATURE, ep.SIGNATURE)}


def test_a_signature_from_another_key_over_a_re_made_manifest_is_refused() -> None:
    """The attacker edits a file, rebuilds the manifest and signs it with their own key (and embeds their key)."""
    forged = package({**FILES, "samples/o1/verdict.json": b'{"verdict": "authentic"}\n'}, FakeSigner(secret=99))
    report = ep.verify_bundle(forged.data, TRUSTED)
    assert kinds(report) == {(ep.BAD_SIGNATURE, ep.SIGNATURE)}


def test_a_changed_signature_is_a_bad_signature() -> None:
    sig = json.loads(ORIGINAL[ep.SIGNATURE])
    other = package(signer=SIGNER)  # ECDSA is randomised: a second valid-looking signature, of the same manifest
    sig2 = json.loads(members(other.data)[ep.SIGNATURE])
    sig["signature_base64"] = sig2["signature_base64"][:-4] + "AAA="
    report = ep.verify_bundle(rezip({**ORIGINAL, ep.SIGNATURE: ep.canonical_json(sig)}), TRUSTED)
    assert kinds(report) == {(ep.BAD_SIGNATURE, ep.SIGNATURE)}


def test_not_a_zip_is_a_bad_archive() -> None:
    assert kinds(ep.verify_bundle(b"PK\x03\x04 not really", TRUSTED)) == {(ep.BAD_ARCHIVE, "(package)")}


def test_a_custody_chain_that_does_not_link_is_named_even_when_signed() -> None:
    """The signer signed a chain whose links are broken (an exporter bug or a forged export): verify says so."""
    doc = json.loads(chain_doc())
    doc["entries"][1]["prev_mac"] = "f" * 64
    doc["anchor"]["length"] = 5
    signer = FakeSigner()
    pkg = package({**FILES, "samples/o1/custody/chain.json": json.dumps(doc).encode()}, signer)
    report = ep.verify_bundle(pkg.data, pem(signer))
    assert {p.kind for p in report.problems} == {ep.CUSTODY}
    details = " ".join(p.detail for p in report.problems)
    assert "entry 1 does not link" in details and "anchor records 5" in details


@pytest.mark.parametrize("path", ["../etc/passwd", "/abs", "a//b", ep.MANIFEST, ep.SIGNATURE, "a\\b", ""])
def test_unsafe_or_reserved_paths_are_refused(path: str) -> None:
    with pytest.raises(ep.PackageError):
        package({path: b"x"})
