"""Evidence packages (issue 10 item 5): a zip whose signed manifest lists every file's path, size and SHA-256, so
that anyone holding the package and the platform's public key can check it offline (docs/decisions.md "Evidence
packages").

Layout of a package::

    manifest.json        canonical JSON (sorted keys, compact, ASCII): format, kind, subject, created_at, the signing
                         key's id, algorithm and public key (PEM), meta, and files: [{path, size, sha256}] by path
    manifest.sig.json    canonical JSON: key_id, algorithm, manifest_sha256, signature_base64 (canonical base64)
    <every other file>   listed in the manifest, e.g. records/order.json, custody/chain.json, evidence/<sha256>

What is signed is the 64 ASCII bytes of the manifest's SHA-256 in hex (KMS ``Sign`` with ``MessageType=RAW`` and
``ECDSA_SHA_256``: the signature is over SHA-256 of those 64 bytes), which keeps the message under KMS's 4 KiB limit
whatever the manifest's size. Every byte of the package's files is covered: a file's content by its hash in the
manifest, the manifest by the signature, and the signature file by being canonical (any change breaks its JSON, its
canonical form, a value checked against the manifest, or the signature itself).

The custody chain inside (``custody/chain.json``) is re-checked offline too: sequence numbers, the previous-MAC links
and the anchor (length and head). Its HMACs need the custody key, which never leaves KMS, so they cannot be checked
offline: the package records that the exporter verified them (``custody_verified_at_export``).

Pure: no boto3. The signer is a port (``chalicelib.ports.ManifestSigner``); signature verification imports
``cryptography`` lazily (the CLI verifies; the Lambda that builds packages only signs, through KMS).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import re
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chalicelib.ports import ManifestSigner

FORMAT = "testbuy-evidence-package/1"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig.json"
RESERVED = frozenset({MANIFEST, SIGNATURE})
ECDSA_SHA_256 = "ECDSA_SHA_256"
CUSTODY_PATH = "custody/chain.json"
_PATH = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*$")
MAX_FILES = 10_000

# Problem kinds (stable: the CLI prints them and tests switch on them)
CHANGED = "changed"  # a listed file's bytes differ from its manifest entry
MISSING = "missing"  # a listed file is not in the package
ADDED = "added"  # a file in the package that the manifest does not list
BAD_SIGNATURE = "bad_signature"  # the signature file is malformed or does not verify under the trusted key
BAD_MANIFEST = "bad_manifest"  # the manifest is missing, not canonical JSON, or not of this format
BAD_ARCHIVE = "bad_archive"  # not a zip, or a name twice
CUSTODY = "custody"  # the custody chain inside does not link or does not end at its anchor


class PackageError(ValueError):
    """A package cannot be built from these files (a bad path, a reserved name)."""


def canonical_json(value: Any) -> bytes:
    """The one serialization the manifest and signature file use: sorted keys, no spaces, ASCII, no NaN."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def signed_message(manifest_bytes: bytes) -> bytes:
    """What the signer signs: the manifest's SHA-256, hex, as 64 ASCII bytes."""
    return sha256_hex(manifest_bytes).encode("ascii")


def public_key_pem(der: bytes) -> str:
    """DER SubjectPublicKeyInfo -> PEM (no cryptography needed)."""
    b64 = base64.b64encode(der).decode()
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    return "-----BEGIN PUBLIC KEY-----\n" + "\n".join(lines) + "\n-----END PUBLIC KEY-----\n"


def _check_path(path: str) -> None:
    if path in RESERVED or not _PATH.fullmatch(path) or ".." in path.split("/") or len(path) > 200:
        raise PackageError(f"{path!r} is not a valid package path (letters, digits, _ . - and /; not reserved)")


def build_manifest(
    files: Mapping[str, bytes],
    *,
    kind: str,
    subject_id: str,
    created_at: datetime,
    key_id: str,
    algorithm: str,
    public_key: str,
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    for path in files:
        _check_path(path)
    if len(files) > MAX_FILES:
        raise PackageError(f"a package holds at most {MAX_FILES} files")
    return {
        "format": FORMAT,
        "kind": kind,
        "subject_id": subject_id,
        "created_at": created_at.isoformat(),
        "signing": {"key_id": key_id, "algorithm": algorithm, "public_key_pem": public_key},
        "meta": dict(meta or {}),
        "files": [{"path": p, "size": len(files[p]), "sha256": sha256_hex(files[p])} for p in sorted(files)],
    }


@dataclass(frozen=True)
class Package:
    data: bytes  # the zip
    manifest_sha256: str
    key_id: str
    files: int


def assemble(
    files: Mapping[str, bytes],
    *,
    kind: str,
    subject_id: str,
    created_at: datetime,
    signer: ManifestSigner,
    meta: Mapping[str, Any] | None = None,
) -> Package:
    """Build the manifest, sign it and zip everything (deterministic: the same inputs give the same bytes)."""
    key_id, algorithm = signer.key_id(), signer.algorithm()
    manifest = build_manifest(
        files,
        kind=kind,
        subject_id=subject_id,
        created_at=created_at,
        key_id=key_id,
        algorithm=algorithm,
        public_key=public_key_pem(signer.public_key_der()),
        meta=meta,
    )
    manifest_bytes = canonical_json(manifest)
    digest = sha256_hex(manifest_bytes)
    signature = signer.sign(signed_message(manifest_bytes))
    sig_doc = {
        "key_id": key_id,
        "algorithm": algorithm,
        "manifest_sha256": digest,
        "signature_base64": base64.b64encode(signature).decode(),
    }
    stamp = created_at.timetuple()[:6]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, content in [(MANIFEST, manifest_bytes), (SIGNATURE, canonical_json(sig_doc))] + [
            (p, files[p]) for p in sorted(files)
        ]:
            info = zipfile.ZipInfo(name, date_time=(max(stamp[0], 1980), *stamp[1:]))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, content)
    return Package(buf.getvalue(), digest, key_id, len(files))


# ------------------------------------------------------------------------------------------------------ verify


@dataclass(frozen=True)
class Problem:
    kind: str
    path: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.path}: {self.detail}"


@dataclass
class VerifyReport:
    problems: list[Problem] = field(default_factory=list)
    manifest_sha256: str | None = None
    key_id: str | None = None
    files: int = 0
    # True when no trusted key was given and the signature was checked against the key the package names itself:
    # that proves integrity since signing, not who signed.
    integrity_only: bool = False

    @property
    def valid(self) -> bool:
        return not self.problems

    def add(self, kind: str, path: str, detail: str) -> None:
        self.problems.append(Problem(kind, path, detail))


def verify_bundle(data: bytes, trusted_public_key_pem: bytes | None) -> VerifyReport:
    """Check a package offline: the signature under the trusted key (or, without one, the key the manifest names:
    ``integrity_only``), every listed file's size and SHA-256, no file missing or added, and the custody chain's
    links and anchor. Names every problem found; never raises on a malformed package."""
    report = VerifyReport()
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        names = zf.namelist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        report.add(BAD_ARCHIVE, "(package)", f"not a readable zip: {exc}")
        return report
    with zf:
        seen: set[str] = set()
        for name in names:
            if name in seen:
                report.add(BAD_ARCHIVE, name, "the name occurs twice in the zip")
            seen.add(name)
        contents: dict[str, bytes] = {}
        for name in seen:
            try:
                contents[name] = zf.read(name)
            except (zipfile.BadZipFile, OSError, ValueError, EOFError, zlib.error) as exc:
                report.add(CHANGED, name, f"cannot be read from the zip: {exc}")
    manifest = _manifest(contents, report)
    if manifest is None:
        return report
    _signature(contents, manifest, trusted_public_key_pem, report)
    listed = _files(manifest, report)
    report.files = len(listed)
    for path, (size, digest) in listed.items():
        if path not in contents:
            if path not in seen:  # an unreadable entry was already named
                report.add(MISSING, path, "listed in the manifest but not in the package")
            continue
        body = contents[path]
        if len(body) != size or sha256_hex(body) != digest:
            report.add(CHANGED, path, f"its SHA-256 is {sha256_hex(body)}, the manifest says {digest}")
    for path in sorted(seen - set(listed) - RESERVED):
        report.add(ADDED, path, "in the package but not listed in the manifest")
    for path in sorted(listed):
        if (path == CUSTODY_PATH or path.endswith("/" + CUSTODY_PATH)) and path in contents:
            for problem in custody_problems(contents[path]):
                report.add(CUSTODY, path, problem)
    return report


def _manifest(contents: Mapping[str, bytes], report: VerifyReport) -> dict[str, Any] | None:
    raw = contents.get(MANIFEST)
    if raw is None:
        report.add(BAD_MANIFEST, MANIFEST, "the package has no manifest")
        return None
    report.manifest_sha256 = sha256_hex(raw)
    try:
        manifest = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        report.add(BAD_MANIFEST, MANIFEST, f"not JSON: {exc}")
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        report.add(BAD_MANIFEST, MANIFEST, f"not a {FORMAT} manifest")
        return None
    try:
        canonical = canonical_json(manifest) == raw
    except ValueError:
        canonical = False
    if not canonical:
        report.add(BAD_MANIFEST, MANIFEST, "not in canonical form (it was edited after signing)")
    return manifest


def _files(manifest: Mapping[str, Any], report: VerifyReport) -> dict[str, tuple[int, str]]:
    listed: dict[str, tuple[int, str]] = {}
    files = manifest.get("files")
    if not isinstance(files, list):
        report.add(BAD_MANIFEST, MANIFEST, "files is not a list")
        return listed
    for entry in files:
        ok = (
            isinstance(entry, dict)
            and isinstance(entry.get("path"), str)
            and isinstance(entry.get("size"), int)
            and isinstance(entry.get("sha256"), str)
        )
        if not ok:
            report.add(BAD_MANIFEST, MANIFEST, f"a malformed file entry: {entry!r:.200}")
            continue
        if entry["path"] in listed or entry["path"] in RESERVED:
            report.add(BAD_MANIFEST, MANIFEST, f"{entry['path']} is listed twice or is reserved")
            continue
        listed[entry["path"]] = (entry["size"], entry["sha256"])
    return listed


def _signature(
    contents: Mapping[str, bytes], manifest: Mapping[str, Any], trusted: bytes | None, report: VerifyReport
) -> None:
    raw = contents.get(SIGNATURE)
    if raw is None:
        report.add(BAD_SIGNATURE, SIGNATURE, "the package has no signature file")
        return
    try:
        sig = json.loads(raw)
        if not isinstance(sig, dict) or canonical_json(sig) != raw:
            raise ValueError("not canonical JSON")
        algorithm, key_id, b64 = sig["algorithm"], sig["key_id"], sig["signature_base64"]
        signature = base64.b64decode(b64, validate=True)
        if base64.b64encode(signature).decode() != b64:
            raise ValueError("signature_base64 is not canonical base64")
    except (ValueError, UnicodeDecodeError, KeyError, TypeError, binascii.Error) as exc:
        report.add(BAD_SIGNATURE, SIGNATURE, f"malformed signature file: {exc}")
        return
    report.key_id = str(key_id)
    signing: dict[str, Any] = manifest["signing"] if isinstance(manifest.get("signing"), dict) else {}
    if key_id != signing.get("key_id") or algorithm != signing.get("algorithm"):
        report.add(BAD_SIGNATURE, SIGNATURE, "its key id or algorithm is not the one the manifest names")
        return
    manifest_raw = contents[MANIFEST]
    if sig.get("manifest_sha256") != sha256_hex(manifest_raw):
        report.add(BAD_SIGNATURE, SIGNATURE, "it signs another manifest (manifest_sha256 differs)")
    key_pem = trusted
    if key_pem is None:
        report.integrity_only = True
        key_pem = str(signing.get("public_key_pem", "")).encode()
    problem = check_signature(key_pem, str(algorithm), signature, signed_message(manifest_raw))
    if problem:
        report.add(BAD_SIGNATURE, SIGNATURE, problem)


def check_signature(public_key_pem_bytes: bytes, algorithm: str, signature: bytes, message: bytes) -> str | None:
    """None when ``signature`` is ``algorithm``'s signature of ``message`` under the PEM key, else why not."""
    from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    if algorithm != ECDSA_SHA_256:
        return f"unsupported signing algorithm {algorithm!r} (expected {ECDSA_SHA_256})"
    try:
        key = serialization.load_pem_public_key(public_key_pem_bytes)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        return f"the public key is not a PEM public key: {exc}"
    if not isinstance(key, ec.EllipticCurvePublicKey):
        return "the public key is not an elliptic-curve key"
    try:
        key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return "the signature does not verify under the public key (the manifest changed, or another key signed)"
    return None


def custody_problems(raw: bytes) -> list[str]:
    """Offline checks of ``custody/chain.json``: sequence numbers 0..n-1, each entry's ``prev_mac`` is the MAC
    of the entry before (the first: all zeros), and the anchor's length and head match the chain's end. The MACs
    themselves need the custody key (KMS) and are not checked here."""
    genesis = "0" * 64
    try:
        doc = json.loads(raw)
        entries = doc["entries"]
        anchor = doc["anchor"]
    except (ValueError, KeyError, TypeError) as exc:
        return [f"not a custody chain document: {exc}"]
    problems: list[str] = []
    prev = genesis
    for i, e in enumerate(entries):
        if not isinstance(e, dict):
            return [f"entry {i} is not an object"]
        if e.get("seq") != i:
            problems.append(f"entry {i} carries sequence number {e.get('seq')}")
        if e.get("prev_mac") != prev:
            problems.append(f"entry {i} does not link to the entry before it")
        prev = str(e.get("mac"))
    if not isinstance(anchor, dict):
        return [*problems, "the chain has no anchor"]
    if anchor.get("length") != len(entries):
        problems.append(f"the anchor records {anchor.get('length')} entries, the chain has {len(entries)}")
    elif anchor.get("head") != (prev if entries else genesis):
        problems.append("the last entry's MAC is not the anchored head")
    return problems
