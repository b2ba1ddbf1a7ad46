"""Shared fixtures. Integration, state-machine, contract and e2e tests share ONE embedded local stack per session
(moto server + Step Functions executor + Lambda bridge + HTTP API); each test isolates itself by creating its own
programme (fresh ids), never by resetting the stack."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="session")
def local_stack() -> Iterator[Any]:
    from testbuy.localstack import LocalStack

    stack = LocalStack(stage="test")
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def stack_info(local_stack: Any) -> Any:
    return local_stack.info


@pytest.fixture()
def deps(local_stack: Any) -> Any:
    """The real adapters wired against the local stack (what a Lambda handler gets)."""
    from chalicelib.bootstrap import deps as build

    return build()


@pytest.fixture()
def token_for(stack_info: Any) -> Any:
    from chalicelib.api.auth import Role, issue_token

    def make(role: str, lab_id: str | None = None, subject: str = "tester") -> str:
        return issue_token(stack_info.token_secret, Role(role), subject, lab_id)

    return make


@pytest.fixture()
def api(stack_info: Any, token_for: Any) -> Any:
    """``api(role, lab_id=None)`` -> an ApiClient for the local HTTP API with a token of that role."""
    from testbuy.client import ApiClient

    def make(role: str | None = "program_manager", lab_id: str | None = None) -> ApiClient:
        return ApiClient(stack_info.api_url, token_for(role, lab_id) if role else None)

    return make


# A whole round over HTTP, run once per session and shared read-only (test_round_http, the dashboard's browser tests).
from tests.e2e.completed_round import completed_round  # noqa: E402, F401
