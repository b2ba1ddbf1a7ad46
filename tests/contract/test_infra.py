"""The deployable description stays consistent: ASL <-> infra/stack.json <-> app.py <-> CloudFormation <-> .chalice/.

None of these run ``chalice package`` (it downloads the Lambda dependencies); ``make package`` does, then cfn-lint.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import pytest

from testbuy.checks import asl_files, statelint_problems, substitute_dummies
from testbuy.infra import ROOT, StackDescription
from testbuy.packaging import (
    BUS_ID,
    PUBLIC_ROUTES,
    apply_cognito_authorizer,
    chalice_logical_id,
    dlq_id,
    missing_requirements,
    placeholders,
    queue_id,
    render_environment,
    render_fragment,
    render_policies,
    render_resources,
    rule_id,
    secret_id,
    stale_policies,
    state_machine_id,
    table_id,
)

DESC = StackDescription.load("prod")
ASL_FILES = asl_files()


@pytest.fixture(scope="module")
def chalice_app() -> Any:
    from testbuy.localstack import load_app

    return load_app().app


@pytest.fixture(scope="module")
def resources() -> dict[str, Any]:
    return render_resources(DESC)


def test_every_state_machine_file_is_described() -> None:
    described = {(ROOT / spec["file"]).resolve() for spec in DESC.raw["state_machines"].values()}
    assert ASL_FILES, "no state_machines/*.asl.json"
    assert {p.resolve() for p in ASL_FILES} == described


@pytest.mark.parametrize("path", ASL_FILES, ids=lambda p: p.name)
def test_statelint_passes(path: Path) -> None:
    problems, _ignored = statelint_problems(path, DESC.functions)
    assert problems == []


@pytest.mark.parametrize("path", ASL_FILES, ids=lambda p: p.name)
def test_dummy_substitution_leaves_no_placeholder(path: Path) -> None:
    text = substitute_dummies(path.read_text())
    assert "${" not in text
    json.loads(text)


@pytest.mark.parametrize("path", ASL_FILES, ids=lambda p: p.name)
def test_placeholders_map_to_lambda_functions(path: Path, chalice_app: Any) -> None:
    used = placeholders(path.read_text())
    assert used, f"{path.name} has no ${{Placeholder}}"
    assert [p for p in used if p not in DESC.functions] == []
    names = {f.name for f in chalice_app.pure_lambda_functions}
    assert [DESC.functions[p] for p in used if DESC.functions[p] not in names] == []


def test_every_mapped_function_exists_and_is_used(chalice_app: Any) -> None:
    names = {f.name for f in chalice_app.pure_lambda_functions}
    assert sorted(set(DESC.functions.values()) - names) == []
    used = {p for path in ASL_FILES for p in placeholders(path.read_text())}
    assert sorted(set(DESC.functions) - used) == []


def test_tables(resources: dict[str, Any]) -> None:
    for key, spec in DESC.tables.items():
        res = resources[table_id(key)]
        props = res["Properties"]
        assert res["Type"] == "AWS::DynamoDB::Table"
        assert res["DeletionPolicy"] == "Retain"
        assert props["TableName"] == DESC.name(spec["name"])
        assert props["BillingMode"] == "PAY_PER_REQUEST"
        assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
        assert [k["AttributeName"] for k in props["KeySchema"]] == spec["key"]
        gsis = {
            g["IndexName"]: [k["AttributeName"] for k in g["KeySchema"]]
            for g in props.get("GlobalSecondaryIndexes", [])
        }
        assert gsis == {name: list(keys) for name, keys in spec["indexes"].items()}
        defined = {a["AttributeName"] for a in props["AttributeDefinitions"]}
        assert defined == set(spec["key"]) | {k for keys in spec["indexes"].values() for k in keys}


def test_bucket_and_bus(resources: dict[str, Any]) -> None:
    bucket = resources["EvidenceBucket"]["Properties"]
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert resources[BUS_ID]["Properties"]["Name"] == DESC.name(DESC.raw["bus"]["name"])


def test_queues_have_dead_letter_queues(resources: dict[str, Any]) -> None:
    for key, q in DESC.raw["queues"].items():
        props = resources[queue_id(key)]["Properties"]
        assert props["QueueName"] == DESC.name(q["name"])
        assert resources[dlq_id(key)]["Properties"]["QueueName"] == DESC.name(q["dlq"])
        assert props["RedrivePolicy"] == {
            "deadLetterTargetArn": {"Fn::GetAtt": [dlq_id(key), "Arn"]},
            "maxReceiveCount": q["max_receives"],
        }


def test_rules_on_the_custom_bus_target_queues_that_allow_them(resources: dict[str, Any]) -> None:
    for key, rule in DESC.raw["rules"].items():
        props = resources[rule_id(key)]["Properties"]
        assert props["Name"] == DESC.name(rule["name"])
        assert props["EventBusName"] == {"Ref": BUS_ID}
        assert props["EventPattern"] == rule["pattern"]
        assert [t["Arn"] for t in props["Targets"]] == [{"Fn::GetAtt": [queue_id(rule["queue"]), "Arn"]}]
        policy = resources[f"{queue_id(rule['queue'])}Policy"]["Properties"]
        statement = policy["PolicyDocument"]["Statement"][0]
        assert statement["Action"] == "sqs:SendMessage"
        assert {"Fn::GetAtt": [rule_id(key), "Arn"]} in statement["Condition"]["ArnEquals"]["aws:SourceArn"]


def test_state_machines_substitute_chalice_function_arns(resources: dict[str, Any]) -> None:
    role = json.dumps(resources["StateMachinesRole"])
    for key, spec in DESC.raw["state_machines"].items():
        props = resources[state_machine_id(key)]["Properties"]
        assert props["StateMachineName"] == DESC.name(spec["name"])
        assert props["StateMachineType"] == "STANDARD"
        asl = DESC.asl(key)
        assert props["DefinitionString"] == asl
        expected = {p: {"Fn::GetAtt": [chalice_logical_id(DESC.functions[p]), "Arn"]} for p in placeholders(asl)}
        assert props["DefinitionSubstitutions"] == expected
        for sub in expected.values():
            assert json.dumps(sub) in role, "the Step Functions role may invoke every substituted function"
    # Distributed Map: child executions of the round machine and its ItemReader on the bucket.
    assert "states:StartExecution" in role and "states:DescribeExecution" in role and "s3:GetObject" in role


def test_chalice_logical_ids_are_camel_case() -> None:
    assert chalice_logical_id("order_capture") == "OrderCapture"
    assert chalice_logical_id("round_load_program") == "RoundLoadProgram"


def test_fragment_ids_do_not_collide_with_chalice(chalice_app: Any) -> None:
    chalice_ids = {"APIHandler", "ApiHandlerRole", "RestAPI", "RestAPIStage", "APIHandlerInvokePermission"}
    for name in [f.name for f in chalice_app.pure_lambda_functions] + [e.name for e in chalice_app.event_sources]:
        chalice_ids |= {chalice_logical_id(name), f"{chalice_logical_id(name)}Role"}
    assert sorted(set(render_resources(DESC)) & chalice_ids) == []


def test_environment_covers_every_required_setting() -> None:
    from chalicelib.config import _ENV, Settings

    env = render_environment(DESC)
    required = [_ENV[name] for name, field in Settings.model_fields.items() if field.is_required()]
    # The webhook secret's value is read from Secrets Manager at run time (TESTBUY_WEBHOOK_SECRET_ARN names it).
    runtime_provided = {"AWS_DEFAULT_REGION", "TESTBUY_WEBHOOK_SECRET"}
    assert sorted(set(required) - set(env) - runtime_provided) == []
    assert env["TESTBUY_AUTH_MODE"] == "cognito"
    assert "TESTBUY_TOKEN_SECRET" not in env


def test_no_secret_value_in_the_environment() -> None:
    env = render_environment(DESC)
    text = json.dumps(env)
    assert "resolve:secretsmanager" not in text and "resolve:ssm-secure" not in text
    assert "TESTBUY_WEBHOOK_SECRET" not in env
    assert env["TESTBUY_WEBHOOK_SECRET_ARN"] == {"Ref": secret_id("webhook")}
    secret = render_resources(DESC)[secret_id("webhook")]
    assert secret["Type"] == "AWS::SecretsManager::Secret"
    assert secret["Properties"]["Name"] == "testbuy-prod-webhook-secret"
    generated = secret["Properties"]["GenerateSecretString"]
    assert json.loads(generated["SecretStringTemplate"]) == {"previous": None}
    assert generated["GenerateStringKey"] == "current"


def test_every_parameter_is_used() -> None:
    fragment = render_fragment(DESC)
    body = json.dumps({k: v for k, v in fragment.items() if k != "Parameters"})
    for parameter in fragment["Parameters"]:
        assert json.dumps({"Ref": parameter}) in body or f"${{{parameter}}}" in body


def test_policy_files_are_current() -> None:
    assert stale_policies(DESC) == [], "run `python -m testbuy.checks policies --write`"


def test_chalice_config_uses_the_baseline_policy(chalice_app: Any) -> None:
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    assert config["app_name"] == "testbuy"
    names = {f.name for f in chalice_app.pure_lambda_functions} | {e.name for e in chalice_app.event_sources}
    for stage, cfg in config["stages"].items():
        assert cfg["autogen_policy"] is False
        assert cfg["iam_policy_file"] == f"policy-{stage}.json"
        overrides = cfg.get("lambda_functions", {})
        assert sorted(set(overrides) - names) == [], "lambda_functions names a function app.py does not define"
        assert not any("iam_policy_file" in o for o in overrides.values()), "roles come from testbuy.iam, not files"
    for doc in render_policies(DESC).values():
        actions = {a for s in doc["Statement"] for a in s["Action"]}
        assert all(a.startswith("logs:") for a in actions), "the chalice baseline grants logging only"


def test_cognito_authorizer_protects_all_but_public_routes() -> None:
    template: dict[str, Any] = {
        "Resources": {
            "RestAPI": {
                "Properties": {
                    "DefinitionBody": {
                        "paths": {
                            "/health": {"get": {}},
                            "/webhooks/delivery": {"post": {}},
                            "/programs": {"post": {}, "options": {}},
                        }
                    }
                }
            }
        }
    }
    assert apply_cognito_authorizer(template) == 1
    paths = template["Resources"]["RestAPI"]["Properties"]["DefinitionBody"]["paths"]
    assert "security" in paths["/programs"]["post"] and "security" not in paths["/programs"]["options"]
    assert all("security" not in op for p in PUBLIC_ROUTES for op in paths.get(p, {}).values())


def test_missing_requirements_are_detected(tmp_path: Path) -> None:
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("# comment\nboto3==1.44.8\nnumpy==2.4.6\npython-dateutil==2.9.0.post0\n")
    with zipfile.ZipFile(tmp_path / "d.zip", "w") as zf:
        zf.writestr("boto3-1.44.8.dist-info/METADATA", "")
        zf.writestr("python_dateutil-2.9.0.post0.dist-info/METADATA", "")
    assert missing_requirements(tmp_path / "d.zip", reqs) == ["numpy==2.4.6"]
