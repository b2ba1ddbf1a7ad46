"""IAM matches the code: each function's role grants exactly what its code reaches, and the declared invariants hold.

The template here is what ``chalice package`` produces for the roles (one function and one role per Lambda function,
found from app.py) with the packaging step applied to it; ``make package`` runs the same check on the real one.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest

from testbuy import iam
from testbuy.infra import StackDescription
from testbuy.packaging import (
    ASYNC_DLQ_ID,
    GATEWAY_RESPONSES,
    GATEWAY_RESPONSES_KEY,
    apply_api_settings,
    apply_function_policies,
    chalice_logical_id,
    render_fragment,
)

DESC = StackDescription.load("prod")


def _fid(name: str) -> str:
    return iam.API_HANDLER_ID if name == iam.API_HANDLER else chalice_logical_id(name)


@pytest.fixture(scope="module")
def packaged() -> dict[str, Any]:
    """Chalice's shape for every function app.py declares (the schedule gets its Schedule event), then packaging."""
    resources: dict[str, Any] = dict(render_fragment(DESC)["Resources"])
    for name in iam.build_graph().entry_points:
        fid = _fid(name)
        role = "ApiHandlerRole" if fid == iam.API_HANDLER_ID else f"{fid}Role"
        props: dict[str, Any] = {"Role": {"Fn::GetAtt": [role, "Arn"]}, "Tracing": "PassThrough"}
        if name == "ledger_sweeper":
            props["Events"] = {"E": {"Type": "Schedule", "Properties": {"Schedule": "rate(1 hour)"}}}
        resources[fid] = {"Type": "AWS::Serverless::Function", "Properties": props}
        resources[role] = {"Type": "AWS::IAM::Role", "Properties": {"Policies": [{"PolicyName": "x"}]}}
    resources["RestAPI"] = {"Type": "AWS::Serverless::Api", "Properties": {"DefinitionBody": {"paths": {}}}}
    template = {"Resources": resources}
    apply_function_policies(template, DESC)
    apply_api_settings(template)
    return template


def _statements(template: dict[str, Any], function: str) -> list[dict[str, Any]]:
    fid = _fid(function)
    role = template["Resources"][fid]["Properties"]["Role"]["Fn::GetAtt"][0]
    return list(template["Resources"][role]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"])


def test_every_function_is_granted_exactly_what_it_reaches(packaged: dict[str, Any]) -> None:
    assert iam.check_template(packaged) == []


def test_the_sweeper_may_scan_the_ledger(packaged: dict[str, Any]) -> None:
    """Issue 7, defect 4: the sweeper scans the ledger table; its role must allow it (and nobody else's)."""
    reach = iam.function_reach()
    scanners = sorted(f for f, r in reach.items() if ("dynamodb:Scan", "table:ledger") in r.grants)
    assert scanners == ["ledger_sweeper"]
    allowed = [s for s in _statements(packaged, "ledger_sweeper") if s["Effect"] == "Allow"]
    assert any(
        "dynamodb:Scan" in s["Action"] and s["Resource"] == {"Fn::GetAtt": ["LedgerTable", "Arn"]} for s in allowed
    )


def test_removing_a_grant_fails_the_check(packaged: dict[str, Any]) -> None:
    broken = copy.deepcopy(packaged)
    for st in _statements(broken, "ledger_sweeper"):
        if st["Effect"] == "Allow" and "dynamodb:Scan" in st["Action"]:
            st["Action"].remove("dynamodb:Scan")
    problems = iam.check_template(broken)
    assert problems == [
        "ledger_sweeper: code reaches dynamodb:Scan on table:ledger "
        "(ledger.list_accounts -> DynamoLedger.list_accounts -> scan) but its role does not grant it"
    ]


def test_a_grant_the_code_does_not_reach_fails_the_check(packaged: dict[str, Any]) -> None:
    broken = copy.deepcopy(packaged)
    role = broken["Resources"]["OrderPublish"]["Properties"]["Role"]["Fn::GetAtt"][0]
    doc = broken["Resources"][role]["Properties"]["Policies"][0]["PolicyDocument"]
    doc["Statement"].append(
        {"Effect": "Allow", "Action": ["dynamodb:UpdateItem"], "Resource": {"Fn::GetAtt": ["LedgerTable", "Arn"]}}
    )
    problems = iam.check_template(broken)
    assert "order_publish: role grants dynamodb:UpdateItem on table:ledger, which its code never reaches" in problems
    assert any(p.startswith("order_publish: writes the ledger") for p in problems)


def test_a_shared_role_with_the_union_of_grants_fails(packaged: dict[str, Any]) -> None:
    """If every function pointed at the API handler's role (Chalice's DefaultRole shape), the check would see it."""
    broken = copy.deepcopy(packaged)
    broken["Resources"]["OrderPublish"]["Properties"]["Role"] = {"Fn::GetAtt": ["ApiHandlerRole", "Arn"]}
    problems = iam.check_template(broken)
    assert any(p.startswith("order_publish: role grants dynamodb:PutItem on table:ledger") for p in problems)


def test_only_declared_money_moving_functions_write_the_ledger(
    packaged: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    perms = iam.permissions(DESC)
    writers = sorted(
        f
        for f, grants in iam.expected_grants().items()
        if any(r == "table:ledger" and a in iam.DDB_WRITES for a, r in grants)
    )
    assert writers == sorted(perms["money_moving"])
    fewer = {**perms, "money_moving": [f for f in perms["money_moving"] if f != "order_capture"]}
    monkeypatch.setattr(iam, "permissions", lambda desc: fewer)
    problems = iam.check_template(packaged)
    assert any(p.startswith("order_capture: writes the ledger") for p in problems)


def test_no_role_can_delete_from_the_ledger_or_the_data_table(packaged: dict[str, Any]) -> None:
    for name in iam.build_graph().entry_points:
        statements = _statements(packaged, name)
        allowed = {a for s in statements if s["Effect"] == "Allow" for a in s["Action"]}
        assert "dynamodb:DeleteItem" not in allowed, name
        denies = [s for s in statements if s["Effect"] == "Deny" and "Condition" not in s]
        deny_delete = next(s for s in denies if s["Action"] == "dynamodb:DeleteItem")
        assert {"Fn::GetAtt": ["LedgerTable", "Arn"]} in deny_delete["Resource"]
        assert {"Fn::GetAtt": ["DataTable", "Arn"]} in deny_delete["Resource"]
        deny_batch = next(s for s in denies if s["Action"] == "dynamodb:BatchWriteItem")
        assert deny_batch["Resource"] == [{"Fn::GetAtt": ["LedgerTable", "Arn"]}]
        # Custody entries live in ORDER#<o> partitions of the data table: no batch (which may delete) there.
        custody = next(s for s in statements if s.get("Sid") == "NoBatchWriteOnCustody")
        assert custody["Effect"] == "Deny" and custody["Resource"] == [{"Fn::GetAtt": ["DataTable", "Arn"]}]
        assert custody["Condition"] == {"ForAnyValue:StringLike": {"dynamodb:LeadingKeys": ["ORDER#*"]}}


def test_a_delete_in_an_adapter_is_caught(packaged: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    real = iam.adapter_methods

    def with_delete(root: Any = iam.ROOT, only: Any = None) -> Any:
        methods = real(root, only)
        ops, kinds = methods["DynamoLedger"]["release"]
        methods["DynamoLedger"]["release"] = ({*ops, "delete_item"}, kinds)
        return methods

    monkeypatch.setattr(iam, "adapter_methods", with_delete)
    problems = iam.check_template(packaged)
    assert "order_release: may delete items from the ledger table" in problems


def test_persona_items_are_readable_by_the_declared_readers_only(packaged: dict[str, Any]) -> None:
    readers = set(iam.permissions(DESC)["persona_items"]["readers"])
    assert {"order_assign_persona", "order_place"} <= readers
    for name, reach in iam.function_reach().items():
        sids = {s.get("Sid") for s in _statements(packaged, name)}
        if name in readers:
            assert "NoPersonaReads" not in sids
        else:
            assert {"NoPersonaReads", "NoPersonaReadBack"} <= sids, name
            reads = {m for p, m in reach.port_calls if p == "personas"} - {"ensure_pool"}
            assert reads == set(), f"{name} reads persona items without being declared"
    deny = next(s for s in _statements(packaged, "order_capture") if s.get("Sid") == "NoPersonaReads")
    assert deny["Condition"] == {"ForAnyValue:StringLike": {"dynamodb:LeadingKeys": ["PERSONAS#*"]}}


def test_an_undeclared_persona_reader_fails(packaged: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    perms = iam.permissions(DESC)
    personas = {**perms["persona_items"], "readers": ["order_place", "api_handler"]}
    monkeypatch.setattr(iam, "permissions", lambda desc: {**perms, "persona_items": personas})
    problems = iam.check_template(packaged)
    assert "order_assign_persona: reads persona items (claim, states) but is not a declared persona reader" in problems
    assert "order_assign_persona: its role does not deny reading persona items" in problems


def test_an_operation_missing_from_the_mapping_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    table = dict(iam.IAM_ACTIONS)
    del table[("dynamodb", "scan")]
    monkeypatch.setattr(iam, "IAM_ACTIONS", table)
    with pytest.raises(iam.IamCheckError, match=r"dynamodb\.scan has no entry"):
        iam.function_reach()


def test_transactions_are_granted_per_item_kind() -> None:
    reach = iam.function_reach()
    # The ledger's reserve is one TransactWriteItems of Update (balance, hold) and Put (journal): no ConditionCheck.
    grants = {a for a, r in reach["order_reserve_budget"].grants if r == "table:ledger"}
    assert grants == {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"}


def test_webhook_secret_is_readable_by_its_declared_readers_only(packaged: dict[str, Any]) -> None:
    readers = set(DESC.raw["secrets"]["webhook"]["readers"])
    for name in iam.build_graph().entry_points:
        got = [
            s
            for s in _statements(packaged, name)
            if s["Effect"] == "Allow" and "secretsmanager:GetSecretValue" in s["Action"]
        ]
        if name in readers:
            assert [s["Resource"] for s in got] == [{"Ref": "WebhookSecret"}]
        else:
            assert got == [], name


def test_async_functions_get_a_dead_letter_queue(packaged: dict[str, Any]) -> None:
    sweeper = packaged["Resources"]["LedgerSweeper"]
    assert sweeper["Properties"]["DeadLetterQueue"]["TargetArn"] == {"Fn::GetAtt": [ASYNC_DLQ_ID, "Arn"]}
    assert any(s["Action"] == ["sqs:SendMessage"] for s in _statements(packaged, "ledger_sweeper"))
    assert sweeper["Properties"]["ReservedConcurrentExecutions"] == 1, "one sweep at a time"
    assert "DeadLetterQueue" not in packaged["Resources"]["OrderCapture"]["Properties"]
    assert all(
        r["Properties"]["Tracing"] == "Active"
        for r in packaged["Resources"].values()
        if r["Type"] == "AWS::Serverless::Function"
    )


def test_checkov_skips_carry_reasons(packaged: dict[str, Any]) -> None:
    for rid, res in packaged["Resources"].items():
        for skip in res.get("Metadata", {}).get("checkov", {}).get("skip", []):
            assert re.fullmatch(r"CKV2?_AWS_\d+", skip["id"]), rid
            assert len(skip["comment"]) > 40, f"{rid} skips {skip['id']} without a real reason"


@pytest.mark.parametrize(
    ("kind", "status", "code"),
    [
        ("UNAUTHORIZED", 401, "unauthorized"),
        ("ACCESS_DENIED", 403, "forbidden"),
        ("REQUEST_TOO_LARGE", 413, "payload_too_large"),
        ("THROTTLED", 429, "too_many_requests"),
        ("DEFAULT_4XX", 400, "invalid_input"),
        ("DEFAULT_5XX", 500, "internal"),
        ("MISSING_AUTHENTICATION_TOKEN", 404, "not_found"),
    ],
)
def test_gateway_responses_use_the_documented_error_body(
    packaged: dict[str, Any], kind: str, status: int, code: str
) -> None:
    body = packaged["Resources"]["RestAPI"]["Properties"]["DefinitionBody"]
    response = body[GATEWAY_RESPONSES_KEY][kind]
    assert response["statusCode"] == str(status)
    assert response["responseParameters"]["gatewayresponse.header.Content-Type"] == "'application/json'"
    # API Gateway substitutes $context.error.messageString with a JSON string literal and the request id plainly.
    rendered = (
        response["responseTemplates"]["application/json"]
        .replace("$context.error.messageString", json.dumps('He said "no"'))
        .replace("$context.requestId", "req-1")
    )
    expected = {"error": {"code": code, "message": 'He said "no"', "details": {"request_id": "req-1"}}}
    assert json.loads(rendered) == expected


def test_every_gateway_response_type_is_valid_json_with_a_4xx_or_5xx_status(packaged: dict[str, Any]) -> None:
    responses = packaged["Resources"]["RestAPI"]["Properties"]["DefinitionBody"][GATEWAY_RESPONSES_KEY]
    assert set(responses) == set(GATEWAY_RESPONSES)
    for kind, response in responses.items():
        assert 400 <= int(response["statusCode"]) < 600, kind
        text = response["responseTemplates"]["application/json"].replace("$context.error.messageString", '"m"')
        assert set(json.loads(text.replace("$context.requestId", "r"))["error"]) == {"code", "message", "details"}


def test_api_has_tracing_access_logs_and_throttling(packaged: dict[str, Any]) -> None:
    props = packaged["Resources"]["RestAPI"]["Properties"]
    assert props["TracingEnabled"] is True
    assert props["AccessLogSetting"]["DestinationArn"] == {"Fn::GetAtt": ["ApiAccessLogs", "Arn"]}
    assert set(json.loads(props["AccessLogSetting"]["Format"])) >= {"requestId", "status", "ip"}
    assert props["MethodSettings"][0]["ThrottlingRateLimit"] > 0
    assert "ApiGatewayAccount" in packaged["Resources"]["RestAPI"]["DependsOn"]


def _mini_project(root: Any, adapter_body: str, app_extra: str = "") -> None:
    """A minimal project in the repository's shape: the analysis reads files only."""
    (root / "chalicelib" / "services").mkdir(parents=True)
    (root / "chalicelib" / "adapters").mkdir()
    (root / "infra").mkdir()
    stack = {**DESC.raw, "permissions": {"money_moving": ["ledger_job"], "no_delete_tables": ["ledger"]}}
    (root / "infra" / "stack.json").write_text(json.dumps(stack))
    (root / "chalicelib" / "ports.py").write_text(
        "from typing import Protocol\n"
        "class Ledger(Protocol):\n    def reserve(self) -> None: ...\n    def accounts(self) -> list[str]: ...\n"
    )
    (root / "chalicelib" / "services" / "deps.py").write_text(
        "from dataclasses import dataclass\nfrom chalicelib.ports import Ledger\n"
        "@dataclass\nclass Deps:\n    ledger: Ledger\n"
    )
    (root / "chalicelib" / "config.py").write_text('_ENV = {"ledger_table": "TESTBUY_LEDGER_TABLE"}\n')
    (root / "chalicelib" / "bootstrap.py").write_text(
        "def build(cfg, sess):\n"
        '    ddb = make_client(sess, "dynamodb")\n'
        "    return Deps(ledger=SplitLedger(ddb, cfg.ledger_table))\n"
        "def deps():\n    return build(None, None)\n"
    )
    (root / "chalicelib" / "adapters" / "ledger.py").write_text(adapter_body)
    (root / "chalicelib" / "services" / "jobs.py").write_text(
        "def sweep(d):\n    keep = d.ledger\n    return keep\ndef reserve(d):\n    d.ledger.reserve()\n"
    )
    (root / "app.py").write_text(
        "from chalicelib.bootstrap import deps\nfrom chalicelib.services import jobs\n"
        '@app.lambda_function(name="reserve_job")\ndef reserve_job(event, context):\n    return jobs.reserve(deps())\n'
        + app_extra
    )


SPLIT_LEDGER = """
class _Base:
    def __init__(self, client, table):
        self._db = client
        self._table = table
    def _scan_all(self):
        return self._db.scan(TableName=self._table)

class SplitLedger(_Base):
    def reserve(self):
        self._db.transact_write_items(TransactItems=[{"Update": {}}, {"Put": {}}])
    def accounts(self):
        return self._scan_all()
"""


def test_new_functions_and_split_adapters_are_followed(tmp_path: Any) -> None:
    """What wf-core's refactors look like: an ``on_cw_event`` handler, adapters with a shared base class, a port
    object passed on whole (every method assumed)."""
    extra = (
        '@app.on_cw_event({"source": ["aws.states"]}, name="ledger_job")\n'
        "def ledger_job(event):\n    return jobs.sweep(deps())\n"
    )
    _mini_project(tmp_path, SPLIT_LEDGER, extra)
    reach = iam.function_reach(tmp_path)
    assert set(reach) == {"api_handler", "reserve_job", "ledger_job"}
    assert reach["reserve_job"].grants == {
        ("dynamodb:UpdateItem", "table:ledger"),
        ("dynamodb:PutItem", "table:ledger"),
    }
    # jobs.sweep passes d.ledger on: every method of the port counts, the base class's scan included.
    assert ("dynamodb:Scan", "table:ledger") in reach["ledger_job"].grants


def test_a_client_passed_out_of_the_adapter_is_refused(tmp_path: Any) -> None:
    escaping = SPLIT_LEDGER.replace("return self._scan_all()", "return scan_everything(self._db)")
    _mini_project(tmp_path, escaping)
    with pytest.raises(iam.IamCheckError, match=r"SplitLedger\.accounts passes its boto3 client"):
        iam.function_reach(tmp_path)


def test_execution_actions_are_granted_on_executions(tmp_path: Any) -> None:
    """DescribeExecution takes an execution ARN: granting it on the state machine would be denied in AWS."""
    workflow = SPLIT_LEDGER + (
        "\nclass Flows:\n    def __init__(self, client, arns):\n        self._sfn = client\n"
        "    def status(self):\n        return self._sfn.describe_execution(executionArn='x')\n"
    )
    _mini_project(tmp_path, workflow)
    ports = (tmp_path / "chalicelib" / "ports.py").read_text()
    (tmp_path / "chalicelib" / "ports.py").write_text(ports + "class Workflow(Protocol):\n    def status(self): ...\n")
    deps = (tmp_path / "chalicelib" / "services" / "deps.py").read_text()
    (tmp_path / "chalicelib" / "services" / "deps.py").write_text(
        deps.replace("import Ledger", "import Ledger, Workflow") + "    workflow: Workflow\n"
    )
    (tmp_path / "chalicelib" / "config.py").write_text(
        '_ENV = {"ledger_table": "TESTBUY_LEDGER_TABLE", "order_arn": "TESTBUY_ORDER_STATE_MACHINE_ARN"}\n'
    )
    boot = (tmp_path / "chalicelib" / "bootstrap.py").read_text()
    (tmp_path / "chalicelib" / "bootstrap.py").write_text(
        boot.replace(
            "ledger=SplitLedger(ddb, cfg.ledger_table))",
            'ledger=SplitLedger(ddb, cfg.ledger_table), workflow=Flows(make_client(sess, "stepfunctions"), '
            "cfg.order_arn))",
        )
    )
    (tmp_path / "chalicelib" / "services" / "jobs.py").write_text("def reserve(d):\n    d.workflow.status()\n")
    reach = iam.function_reach(tmp_path)
    assert reach["reserve_job"].grants == {("states:DescribeExecution", "execution:order")}
    from testbuy.packaging import _resource_arn

    arn = _resource_arn("execution:order", DESC)
    assert arn == {
        "Fn::Sub": "arn:${AWS::Partition}:states:${AWS::Region}:${AWS::AccountId}:execution:testbuy-prod-order:*"
    }
    assert iam._resource_key(arn, DESC) == "execution:order"


def test_an_adapter_without_a_described_resource_is_refused(tmp_path: Any) -> None:
    _mini_project(tmp_path, SPLIT_LEDGER)
    boot = (tmp_path / "chalicelib" / "bootstrap.py").read_text()
    (tmp_path / "chalicelib" / "bootstrap.py").write_text(boot.replace("cfg.ledger_table", "cfg.somewhere_else"))
    with pytest.raises(iam.IamCheckError, match="gives it no resource"):
        iam.function_reach(tmp_path)


def test_views_behind_a_declaration_wrapper_run_in_the_api_handler(tmp_path: Any) -> None:
    """api-edge's shape: ``@endpoint(bp, ...)`` registers the route; the wrapper reads the webhook secret."""
    _mini_project(tmp_path, SPLIT_LEDGER)
    api = tmp_path / "chalicelib" / "api"
    api.mkdir()
    (api / "declare.py").write_text(
        "def endpoint(bp, method, path):\n"
        "    def register(handler):\n"
        "        def view():\n            return _serve(handler)\n"
        "        return view\n"
        "    return register\n"
        "def _serve(handler):\n"
        "    from chalicelib.api.keys import signing_keys\n"
        "    signing_keys()\n    return handler()\n"
    )
    (api / "keys.py").write_text("def signing_keys():\n    return parameters.get_secret('x')\n")
    (api / "money.py").write_text(
        "from chalicelib.api.declare import endpoint\nfrom chalicelib.bootstrap import deps\n"
        "@endpoint(bp, 'GET', '/accounts')\ndef accounts():\n    return deps().ledger.accounts()\n"
    )
    reach = iam.function_reach(tmp_path)
    assert reach["api_handler"].reads_secrets
    assert ("dynamodb:Scan", "table:ledger") in reach["api_handler"].grants


def test_packaged_api_checks_pass_and_catch_each_breach(packaged: dict[str, Any]) -> None:
    from testbuy.packaging import check_packaged_api

    template = {**packaged, "Globals": render_fragment(DESC)["Globals"]}
    assert check_packaged_api(template) == []
    broken = copy.deepcopy(template)
    del broken["Resources"]["RestAPI"]["Properties"]["DefinitionBody"][GATEWAY_RESPONSES_KEY]["THROTTLED"]
    broken["Resources"]["RestAPI"]["Properties"]["DefinitionBody"][GATEWAY_RESPONSES_KEY]["UNAUTHORIZED"][
        "statusCode"
    ] = "403"
    broken["Resources"]["OrderCapture"]["Properties"]["Tracing"] = "PassThrough"
    broken["Globals"]["Function"]["Environment"]["Variables"]["TESTBUY_WEBHOOK_SECRET"] = {
        "Fn::Sub": "{{resolve:secretsmanager:x:SecretString}}"
    }
    problems = check_packaged_api(broken)
    assert "RestAPI: no gateway response for THROTTLED" in problems
    assert "RestAPI: gateway response UNAUTHORIZED answers 403, not 401" in problems
    assert "OrderCapture: X-Ray tracing is not Active" in problems
    assert "APIHandler: its environment holds a secret value (resolve:secretsmanager)" in problems


def test_port_calls_inside_service_classes_count(tmp_path: Any) -> None:
    _mini_project(tmp_path, SPLIT_LEDGER)
    (tmp_path / "chalicelib" / "services" / "jobs.py").write_text(
        "class Saga:\n"
        "    def __init__(self, deps):\n        self._deps = deps\n"
        "    def run(self):\n        self._deps.ledger.accounts()\n"
        "def reserve(d):\n    return Saga(d).run()\n"
    )
    reach = iam.function_reach(tmp_path)
    assert reach["reserve_job"].grants == {("dynamodb:Scan", "table:ledger")}


def test_dropping_a_deny_guard_fails_the_check(packaged: dict[str, Any]) -> None:
    broken = copy.deepcopy(packaged)
    role = broken["Resources"]["ApiHandlerRole"]["Properties"]["Policies"][0]["PolicyDocument"]
    role["Statement"] = [s for s in role["Statement"] if s.get("Sid") not in ("NoBatchWriteOnCustody", "NeverDelete")]
    problems = iam.check_template(broken)
    assert "api_handler: its role does not deny BatchWriteItem on custody partitions" in problems
    assert "api_handler: its role lacks the explicit Deny of dynamodb:DeleteItem on the data table" in problems


def test_a_literal_selector_narrows_the_resource(tmp_path: Any) -> None:
    """``d.workflow.start("order", ...)`` reaches the order machine only; a computed key reaches every machine."""
    flows = SPLIT_LEDGER + (
        "\nclass Flows:\n    def __init__(self, client, machines):\n        self._sfn = client\n"
        "    def start(self, machine, name):\n        return self._sfn.start_execution(stateMachineArn=machine)\n"
    )
    extra = '@app.lambda_function(name="ledger_job")\ndef ledger_job(event, context):\n    return jobs.sweep(deps())\n'
    _mini_project(tmp_path, flows, extra)
    root = tmp_path / "chalicelib"
    (root / "ports.py").write_text(
        (root / "ports.py").read_text() + "class Workflow(Protocol):\n    def start(self, machine, name): ...\n"
    )
    deps = (root / "services" / "deps.py").read_text()
    (root / "services" / "deps.py").write_text(
        deps.replace("import Ledger", "import Ledger, Workflow") + "    workflow: Workflow\n"
    )
    (root / "config.py").write_text(
        '_ENV = {"ledger_table": "TESTBUY_LEDGER_TABLE", "order_arn": "TESTBUY_ORDER_STATE_MACHINE_ARN", '
        '"round_arn": "TESTBUY_ROUND_STATE_MACHINE_ARN"}\n'
    )
    (root / "bootstrap.py").write_text(
        (root / "bootstrap.py")
        .read_text()
        .replace(
            "ledger=SplitLedger(ddb, cfg.ledger_table))",
            'ledger=SplitLedger(ddb, cfg.ledger_table), workflow=Flows(make_client(sess, "stepfunctions"), '
            '{"order": cfg.order_arn, "round": cfg.round_arn}))',
        )
    )
    (root / "services" / "jobs.py").write_text(
        "def reserve(d):\n    d.workflow.start('order', 'x')\n"
        "def sweep(d):\n    kind = 'round'\n    d.workflow.start(kind, 'y')\n"
    )
    reach = iam.function_reach(tmp_path)
    assert reach["reserve_job"].grants == {("states:StartExecution", "machine:order")}
    assert reach["ledger_job"].grants == {
        ("states:StartExecution", "machine:order"),
        ("states:StartExecution", "machine:round"),
    }


def test_a_policy_attached_to_a_role_elsewhere_in_the_template_is_seen(packaged: dict[str, Any]) -> None:
    broken = copy.deepcopy(packaged)
    broken["Resources"]["Extra"] = {
        "Type": "AWS::IAM::Policy",
        "Properties": {
            "PolicyName": "extra",
            "Roles": [{"Ref": "OrderCaptureRole"}],
            "PolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Action": "dynamodb:DeleteItem",
                        "Resource": {"Fn::GetAtt": ["LedgerTable", "Arn"]},
                    }
                ],
            },
        },
    }
    broken["Resources"]["OrderPublishRole"]["Properties"]["ManagedPolicyArns"] = [
        "arn:aws:iam::aws:policy/AdministratorAccess"
    ]
    problems = iam.check_template(broken)
    assert "order_capture: role grants dynamodb:DeleteItem on table:ledger, which its code never reaches" in problems
    assert "order_capture: may delete items from the ledger table" in problems
    assert any(p.startswith("order_publish: role grants managed-policies") for p in problems)
