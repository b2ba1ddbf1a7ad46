"""Tests share one embedded local stack whose moto backends live in the test process. ``moto.mock_aws`` (or any
``mock_*``) started in that process resets those backends when it stops, and every stack test after it then fails
with ResourceNotFoundException. A test that needs AWS uses the ``local_stack`` fixture instead."""

from __future__ import annotations

import re
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
IN_PROCESS_MOCK = re.compile(r"^\s*(from moto import|import moto\b|@mock_\w+|with mock_\w+\()", re.MULTILINE)


def test_no_test_starts_moto_in_process() -> None:
    offenders = [
        str(p.relative_to(TESTS)) for p in sorted(TESTS.rglob("*.py")) if IN_PROCESS_MOCK.search(p.read_text())
    ]
    assert offenders == []


def test_the_check_sees_a_decorated_mock() -> None:
    assert IN_PROCESS_MOCK.search("import boto3\nfrom moto import mock_aws\n\n@mock_aws\ndef test_x(): ...\n")
    assert not IN_PROCESS_MOCK.search('"""Not ``moto.mock_aws``: it would reset the backends."""\n')
