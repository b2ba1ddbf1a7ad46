"""Static checks run by ``make lint`` / ``make package``: ``python -m testbuy.checks <command>``.

- ``statelint``: every ``state_machines/*.asl.json`` through statelint, placeholders replaced by dummy Lambda ARNs.
- ``cfnlint <template>``: cfn-lint on a template (``.cfnlintrc`` at the repository root applies).
- ``contracts``: the committed event schemas and OpenAPI document match the code (``testbuy.contracts``).
- ``policies [--write]``: the IAM policy files in ``.chalice/`` match infra/stack.json (``--write`` regenerates).
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testbuy.checks", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("statelint", help="statelint every state_machines/*.asl.json")
    cfn = sub.add_parser("cfnlint", help="cfn-lint a template")
    cfn.add_argument("template", type=Path)
    sub.add_parser("contracts", help="event schemas and OpenAPI document are up to date")
    pol = sub.add_parser("policies", help=".chalice/ IAM policies match infra/stack.json")
    pol.add_argument("--write", action="store_true", help="regenerate them")
    args = parser.parse_args(argv)
    if args.command == "statelint":
        return run_statelint()
    if args.command == "cfnlint":
        return run_cfnlint(args.template)
    if args.command == "contracts":
        return run_contracts()
    return run_policies(args.write)


if __name__ == "__main__":
    sys.exit(main())
