"""Static checks run by ``make lint`` / ``make package``: ``python -m testbuy.checks <command>``.

- ``statelint``: every ``state_machines/*.asl.json`` through statelint, placeholders replaced by dummy Lambda ARNs.
- ``cfnlint <template>``: cfn-lint on a template (``.cfnlintrc`` at the repository root applies).
- ``contracts``: the committed event schemas and OpenAPI document match the code (``testbuy.contracts``).
- ``policies [--write]``: the IAM policy files in ``.chalice/`` match infra/stack.json (``--write`` regenerates).
- ``iam [template] [--show]``: every function of the packaged template is granted exactly what its code reaches
  (``testbuy.iam``); ``--show`` prints each function's grants.
- ``checkov [template]``: checkov on the packaged template, 0 failed checks (skips carry reasons in Metadata).
- ``bandit``: bandit on ``chalicelib/``, 0 findings (each exception explained inline with ``# nosec Bxxx # why``).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from testbuy.infra import ROOT, StackDescription
from testbuy.packaging import DEFAULT_STAGE, PLACEHOLDER, placeholders, stale_policies, write_policies

DUMMY_ARN = "arn:aws:lambda:us-east-1:123456789012:function:testbuy-check-{}"
PACKAGED = ROOT / "build" / "package" / "sam.json"
#: checkov lives in its own virtualenv: it pins boto3==1.35.49 (and packaging<24), which conflicts with our boto3 pin.
CHECKOV_VENV = ROOT / ".venv-checkov"

#: statelint 3.1.0 findings that contradict the Amazon States Language as Step Functions implements it. Each entry
#: is a regex over statelint's message and the reason it is not an error.
KNOWN_FALSE_POSITIVES: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r'^Field "(InputType|CSVHeaderLocation|CSVHeaders|CSVDelimiter)" not allowed in .*\.ReaderConfig$'),
        "statelint 3.1.0 only knows MaxItems/MaxItemsPath in ItemReader.ReaderConfig; Step Functions documents "
        "InputType (JSON, CSV, MANIFEST, ...) and the CSV options there, and needs InputType JSON to read a JSON "
        "array from S3 (moto's executor too)",
    ),
)


def asl_files(root: Path = ROOT) -> list[Path]:
    return sorted((root / "state_machines").glob("*.asl.json"))


def substitute_dummies(asl: str) -> str:
    """Replace each ``${Placeholder}`` with a syntactically valid Lambda ARN, as DefinitionSubstitutions would."""
    return PLACEHOLDER.sub(lambda m: DUMMY_ARN.format(m.group(1)), asl)


def statelint_problems(path: Path, functions: dict[str, str] | None = None) -> tuple[list[str], list[str]]:
    """(problems, ignored known false positives) for one ASL file."""
    from statelint.linter import Linter

    text = path.read_text()
    problems: list[str] = []
    if functions is not None:
        unknown = [p for p in placeholders(text) if p not in functions]
        if unknown:
            problems.append(f"placeholders not in infra/stack.json functions: {', '.join(unknown)}")
    ignored: list[str] = []
    for message in Linter.validate(substitute_dummies(text)):
        if any(pattern.match(message) for pattern, _ in KNOWN_FALSE_POSITIVES):
            ignored.append(message)
        else:
            problems.append(message)
    return problems, ignored


def run_statelint(root: Path = ROOT) -> int:
    files = asl_files(root)
    if not files:
        print(f"statelint: no state_machines/*.asl.json under {root}", file=sys.stderr)
        return 1
    functions = StackDescription.load(DEFAULT_STAGE, root).functions
    failed = 0
    for path in files:
        problems, ignored = statelint_problems(path, functions)
        rel = path.relative_to(root)
        for message in ignored:
            print(f"statelint: {rel}: ignored known statelint false positive: {message}")
        if problems:
            failed += 1
            print(f"statelint: {rel}: {len(problems)} error(s)", file=sys.stderr)
            for message in problems:
                print(f"  {message}", file=sys.stderr)
        else:
            print(f"statelint: {rel}: ok")
    return 1 if failed else 0


def run_cfnlint(template: Path) -> int:
    if not template.exists():
        print(f"cfn-lint: {template} does not exist; build it with `testbuy package`", file=sys.stderr)
        return 2
    exe = Path(sys.executable).parent / "cfn-lint"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "cfnlint"]
    return subprocess.run([*cmd, str(template)], cwd=ROOT, check=False).returncode


def run_contracts() -> int:
    import importlib

    try:
        contracts = importlib.import_module("testbuy.contracts")
    except ModuleNotFoundError as exc:
        if exc.name != "testbuy.contracts":
            raise
        print("contracts: testbuy/contracts.py does not exist yet; skipping the schema and OpenAPI checks")
        return 0
    problems = [*contracts.check_schemas(False), *contracts.check_openapi(False)]
    for p in problems:
        print(f"contracts: {p}", file=sys.stderr)
    if not problems:
        print("contracts: event schemas and OpenAPI document are up to date")
    return 1 if problems else 0


def run_policies(write: bool, root: Path = ROOT) -> int:
    desc = StackDescription.load(DEFAULT_STAGE, root)
    if write:
        for path in write_policies(desc, root / ".chalice"):
            print(f"policies: wrote {path.relative_to(root)}")
        return 0
    stale = stale_policies(desc, root / ".chalice")
    for name in stale:
        print(
            f"policies: .chalice/{name} is out of date; run `python -m testbuy.checks policies --write`",
            file=sys.stderr,
        )
    return 1 if stale else 0


def run_iam(template: Path, show: bool) -> int:
    import json

    from testbuy import iam

    if show:
        for function, lines in iam.coverage().items():
            print(f"{function}:")
            for line in lines:
                print(f"  {line}")
    if not template.exists():
        print(f"iam: {template} does not exist; build it with `testbuy package`", file=sys.stderr)
        return 2
    from testbuy.packaging import check_packaged_api

    try:
        doc = json.loads(template.read_text())
        problems = [*iam.check_template(doc), *check_packaged_api(doc)]
    except iam.IamCheckError as exc:
        print(f"iam: {exc}", file=sys.stderr)
        return 1
    for p in problems:
        print(f"iam: {p}", file=sys.stderr)
    if not problems:
        grants = iam.expected_grants()
        total = sum(len(g) for g in grants.values())
        print(f"iam: {len(grants)} functions granted exactly what their code reaches ({total} action-resource pairs)")
        print("iam: gateway responses in the error body, tracing on, no secret in any environment")
    return 1 if problems else 0


def run_checkov(template: Path) -> int:
    if not template.exists():
        print(f"checkov: {template} does not exist; build it with `testbuy package`", file=sys.stderr)
        return 2
    exe = CHECKOV_VENV / "bin" / "checkov"
    if not exe.exists():
        print(f"checkov: {exe} is missing; `make lint` installs it (requirements-checkov.txt)", file=sys.stderr)
        return 2
    cmd = [str(exe), "-f", str(template), "--framework", "cloudformation", "--compact", "--quiet", "--skip-download"]
    return subprocess.run(cmd, cwd=ROOT, check=False).returncode


def run_bandit(root: Path = ROOT) -> int:
    cmd = [sys.executable, "-m", "bandit", "-q", "-r", str(root / "chalicelib")]
    proc = subprocess.run(cmd, cwd=root, check=False, capture_output=True, text=True)
    # bandit warns once per line of a multi-line statement that carries a nosec: keep only the findings.
    print(proc.stdout, end="")
    if proc.returncode == 0:
        print("bandit: chalicelib/ has no findings")
    return proc.returncode


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testbuy.checks", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("statelint", help="statelint every state_machines/*.asl.json")
    cfn = sub.add_parser("cfnlint", help="cfn-lint a template")
    cfn.add_argument("template", type=Path)
    sub.add_parser("contracts", help="event schemas and OpenAPI document are up to date")
    pol = sub.add_parser("policies", help=".chalice/ IAM policies match infra/stack.json")
    pol.add_argument("--write", action="store_true", help="regenerate them")
    iam_cmd = sub.add_parser("iam", help="function roles grant exactly what the code reaches")
    iam_cmd.add_argument("template", type=Path, nargs="?", default=PACKAGED)
    iam_cmd.add_argument("--show", action="store_true", help="print each function's grants")
    ckv = sub.add_parser("checkov", help="checkov on the packaged template")
    ckv.add_argument("template", type=Path, nargs="?", default=PACKAGED)
    sub.add_parser("bandit", help="bandit on chalicelib/")
    args = parser.parse_args(argv)
    if args.command == "iam":
        return run_iam(args.template, args.show)
    if args.command == "checkov":
        return run_checkov(args.template)
    if args.command == "bandit":
        return run_bandit()
    if args.command == "statelint":
        return run_statelint()
    if args.command == "cfnlint":
        return run_cfnlint(args.template)
    if args.command == "contracts":
        return run_contracts()
    return run_policies(args.write)


if __name__ == "__main__":
    sys.exit(main())
