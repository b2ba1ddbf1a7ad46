"""Builds the deployable CloudFormation (SAM) template: ``chalice package`` merged with infra/stack.json.

The stateful resources (tables, bucket, bus, queues, rules, state machines, the Step Functions role, the Cognito user
pool) are rendered from the single description in ``infra/stack.json`` by pure functions (``render_fragment``,
``render_resources``) and merged into Chalice's template with ``chalice package --merge-template``. The handlers'
environment variables go into the fragment's SAM ``Globals`` (Chalice's config cannot ``Ref`` anything), and the
state machines get each ``${Placeholder}`` through ``DefinitionSubstitutions`` as the ``Arn`` of the Chalice
``lambda_function`` it maps to.

No resource that a function refers to refers back to the functions: state-machine ARNs are built from their fixed
names with ``Fn::Sub`` (a ``Ref`` would close a cycle: function -> state machine -> function), and the IAM policies
in ``.chalice/`` name resources by their stage-qualified names (see ``render_policies``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from testbuy.infra import ROOT, StackDescription

STAGES = ("dev", "prod")
DEFAULT_STAGE = "prod"
DEFAULT_REGION = "us-east-1"
#: Tasks that move money: each runs in its own Lambda function under ``.chalice/policy-ledger-<stage>.json``.
MONEY_MOVING = ("order_reserve_budget", "order_capture", "order_refund", "order_release", "ledger_sweeper")
#: Routes that must stay reachable without a Cognito token (health check; HMAC-signed marketplace webhook).
PUBLIC_ROUTES = ("/health", "/webhooks/delivery")
AUTHORIZER = "TestbuyCognito"
PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_]+)\}")

_SUB = "arn:${AWS::Partition}"
_DDB_WRITE = [
    "dynamodb:GetItem",
    "dynamodb:BatchGetItem",
    "dynamodb:Query",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:ConditionCheckItem",
]


class PackagingError(RuntimeError):
    """Packaging cannot produce a deployable template; the message says why and what to do."""


# ------------------------------------------------------------------------------------------------ naming


def chalice_logical_id(function_name: str) -> str:
    """The logical id ``chalice package`` gives a ``@app.lambda_function``/``@app.schedule`` named ``function_name``
    (CamelCase of the name, e.g. ``order_capture`` -> ``OrderCapture``; its role is ``<id>Role``)."""
    from chalice.utils import to_cfn_resource_name

    return str(to_cfn_resource_name(function_name))


def _camel(key: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[-_]", key) if part)


def table_id(key: str) -> str:
    return f"{_camel(key)}Table"


def queue_id(key: str) -> str:
    return f"{_camel(key)}Queue"


def dlq_id(key: str) -> str:
    return f"{_camel(key)}DeadLetterQueue"


def rule_id(key: str) -> str:
    return f"{_camel(key)}Rule"


def state_machine_id(key: str) -> str:
    return f"{_camel(key)}StateMachine"


BUCKET_ID = "EvidenceBucket"
BUS_ID = "EventBus"
SFN_ROLE_ID = "StateMachinesRole"
USER_POOL_ID = "UserPool"


def placeholders(asl: str) -> list[str]:
    """The ``${Placeholder}`` names an ASL document uses, in order of first appearance."""
    return list(dict.fromkeys(PLACEHOLDER.findall(asl)))


def _walk(node: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        found.append(node)
        for value in node.values():
            found.extend(_walk(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_walk(value))
    return found


def uses_distributed_map(asl: str) -> bool:
    return any(
        isinstance(n.get("ProcessorConfig"), dict) and n["ProcessorConfig"].get("Mode") == "DISTRIBUTED"
        for n in _walk(json.loads(asl))
    )


def uses_item_reader(asl: str) -> bool:
    return any("ItemReader" in n for n in _walk(json.loads(asl)))


def _state_machine_arn(name: str) -> dict[str, Any]:
    return {"Fn::Sub": f"{_SUB}:states:${{AWS::Region}}:${{AWS::AccountId}}:stateMachine:{name}"}


def _bucket_name(desc: StackDescription) -> dict[str, Any]:
    # S3 names are global: the account id keeps two deployments of the same stage from colliding.
    return {"Fn::Sub": desc.name(desc.raw["bucket"]["name"]) + "-${AWS::AccountId}"}


# ------------------------------------------------------------------------------------------------ fragment


def render_fragment(desc: StackDescription, roles: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The CloudFormation fragment merged into Chalice's template (pure: reads only ``desc`` and the ASL files)."""
    resources: dict[str, Any] = {}
    outputs: dict[str, Any] = {}
    retain = {"DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain"}
    disposable = {"DeletionPolicy": "Delete", "UpdateReplacePolicy": "Delete"}

    for key, spec in desc.tables.items():
        table: dict[str, Any] = {
            **desc.table_definition(spec),
            "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
            "SSESpecification": {"SSEEnabled": True},
            "DeletionProtectionEnabled": True,
        }
        resources[table_id(key)] = {"Type": "AWS::DynamoDB::Table", **retain, "Properties": table}

    resources[BUCKET_ID] = {
        "Type": "AWS::S3::Bucket",
        **retain,
        "Properties": {
            "BucketName": _bucket_name(desc),
            "BucketEncryption": {
                "ServerSideEncryptionConfiguration": [{"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
            },
            "PublicAccessBlockConfiguration": {
                "BlockPublicAcls": True,
                "BlockPublicPolicy": True,
                "IgnorePublicAcls": True,
                "RestrictPublicBuckets": True,
            },
            "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
            "VersioningConfiguration": {"Status": "Enabled"},
        },
    }
    resources[f"{BUCKET_ID}Policy"] = {
        "Type": "AWS::S3::BucketPolicy",
        "Properties": {
            "Bucket": {"Ref": BUCKET_ID},
            "PolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "DenyInsecureTransport",
                        "Effect": "Deny",
                        "Principal": "*",
                        "Action": "s3:*",
                        "Resource": [
                            {"Fn::GetAtt": [BUCKET_ID, "Arn"]},
                            {"Fn::Sub": f"${{{BUCKET_ID}.Arn}}/*"},
                        ],
                        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                    }
                ],
            },
        },
    }

    resources[BUS_ID] = {"Type": "AWS::Events::EventBus", "Properties": {"Name": desc.name(desc.raw["bus"]["name"])}}

    for key, q in desc.raw["queues"].items():
        # Queues hold messages in flight only (the journal and the archive consumer keep the record): deleting them
        # with the stack is intended, and said explicitly.
        resources[dlq_id(key)] = {
            "Type": "AWS::SQS::Queue",
            **disposable,
            "Properties": {
                "QueueName": desc.name(q["dlq"]),
                "MessageRetentionPeriod": 1209600,
                "SqsManagedSseEnabled": True,
            },
        }
        resources[queue_id(key)] = {
            "Type": "AWS::SQS::Queue",
            **disposable,
            "Properties": {
                "QueueName": desc.name(q["name"]),
                "MessageRetentionPeriod": 345600,
                "SqsManagedSseEnabled": True,
                "VisibilityTimeout": 30,
                "RedrivePolicy": {
                    "deadLetterTargetArn": {"Fn::GetAtt": [dlq_id(key), "Arn"]},
                    "maxReceiveCount": int(q["max_receives"]),
                },
            },
        }
        outputs[f"{queue_id(key)}Url"] = {"Value": {"Ref": queue_id(key)}}

    senders: dict[str, list[str]] = {}
    for key, rule in desc.raw["rules"].items():
        resources[rule_id(key)] = {
            "Type": "AWS::Events::Rule",
            "Properties": {
                "Name": desc.name(rule["name"]),
                "EventBusName": {"Ref": BUS_ID},
                "EventPattern": rule["pattern"],
                "State": "ENABLED",
                "Targets": [{"Id": rule["queue"], "Arn": {"Fn::GetAtt": [queue_id(rule["queue"]), "Arn"]}}],
            },
        }
        senders.setdefault(rule["queue"], []).append(rule_id(key))
    for qkey, rule_ids in senders.items():
        resources[f"{queue_id(qkey)}Policy"] = {
            "Type": "AWS::SQS::QueuePolicy",
            "Properties": {
                "Queues": [{"Ref": queue_id(qkey)}],
                "PolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Sid": "AllowBusRules",
                            "Effect": "Allow",
                            "Principal": {"Service": "events.amazonaws.com"},
                            "Action": "sqs:SendMessage",
                            "Resource": {"Fn::GetAtt": [queue_id(qkey), "Arn"]},
                            "Condition": {
                                "ArnEquals": {"aws:SourceArn": [{"Fn::GetAtt": [r, "Arn"]} for r in rule_ids]}
                            },
                        }
                    ],
                },
            },
        }

    functions = desc.functions
    invoked: list[str] = []
    sfn_statements: list[dict[str, Any]] = []
    for key, spec in desc.raw["state_machines"].items():
        asl = desc.asl(key)
        used = placeholders(asl)
        unknown = [p for p in used if p not in functions]
        if unknown:
            raise PackagingError(f"{spec['file']} uses placeholders missing from infra/stack.json functions: {unknown}")
        substitutions = {p: {"Fn::GetAtt": [chalice_logical_id(functions[p]), "Arn"]} for p in used}
        invoked.extend(functions[p] for p in used if functions[p] not in invoked)
        name = desc.name(spec["name"])
        resources[state_machine_id(key)] = {
            "Type": "AWS::StepFunctions::StateMachine",
            "Properties": {
                "StateMachineName": name,
                "StateMachineType": "STANDARD",
                "RoleArn": {"Fn::GetAtt": [SFN_ROLE_ID, "Arn"]},
                "DefinitionString": asl,
                "DefinitionSubstitutions": substitutions,
            },
        }
        outputs[f"{state_machine_id(key)}Arn"] = {"Value": {"Ref": state_machine_id(key)}}
        if uses_distributed_map(asl):
            # A Distributed Map runs its items as child executions of this very state machine.
            sfn_statements.append(
                {"Effect": "Allow", "Action": "states:StartExecution", "Resource": _state_machine_arn(name)}
            )
            sfn_statements.append(
                {
                    "Effect": "Allow",
                    "Action": ["states:DescribeExecution", "states:StopExecution"],
                    "Resource": {"Fn::Sub": f"{_SUB}:states:${{AWS::Region}}:${{AWS::AccountId}}:execution:{name}/*"},
                }
            )
        if uses_item_reader(asl):
            sfn_statements.append(
                {"Effect": "Allow", "Action": "s3:GetObject", "Resource": {"Fn::Sub": f"${{{BUCKET_ID}.Arn}}/*"}}
            )
    invoke_arns: list[Any] = []
    for fn in invoked:
        fid = chalice_logical_id(fn)
        invoke_arns += [{"Fn::GetAtt": [fid, "Arn"]}, {"Fn::Sub": f"${{{fid}.Arn}}:*"}]
    resources[SFN_ROLE_ID] = {
        "Type": "AWS::IAM::Role",
        "Properties": {
            "AssumeRolePolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "states.amazonaws.com"},
                        "Action": "sts:AssumeRole",
                        "Condition": {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}},
                    }
                ],
            },
            "Policies": [
                {
                    "PolicyName": "testbuy-state-machines",
                    "PolicyDocument": {
                        "Version": "2012-10-17",
                        "Statement": [
                            {"Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": invoke_arns},
                            *_dedupe(sfn_statements),
                        ],
                    },
                }
            ],
        },
    }

    resources.update(_cognito(desc, roles))
    outputs["UserPoolId"] = {"Value": {"Ref": USER_POOL_ID}}
    outputs["UserPoolClientId"] = {"Value": {"Ref": f"{USER_POOL_ID}Client"}}
    outputs["EventBusName"] = {"Value": {"Ref": BUS_ID}}

    return {
        "Parameters": {
            "MarketplaceUrl": {
                "Type": "String",
                "Description": "Base URL of the marketplace adapter the order tasks call (TESTBUY_MARKETPLACE_URL).",
                "AllowedPattern": "^https://.+",
            },
            "WebhookSecretId": {
                "Type": "String",
                "Description": "Secrets Manager secret (name or ARN) whose SecretString is the marketplace webhook "
                'secrets as JSON {"current": "whsec_...", "previous": ... | null} (TESTBUY_WEBHOOK_SECRET_ARN).',
                "Default": f"testbuy/{desc.stage}/webhook-secret",
            },
        },
        "Globals": {"Function": {"Environment": {"Variables": render_environment(desc)}}},
        "Resources": resources,
        "Outputs": outputs,
    }


def render_resources(desc: StackDescription) -> dict[str, Any]:
    """Only the ``Resources`` of :func:`render_fragment`."""
    resources: dict[str, Any] = render_fragment(desc)["Resources"]
    return resources


def render_environment(desc: StackDescription) -> dict[str, Any]:
    """Environment of every function (``chalicelib.config`` reads these; the Lambda runtime sets the region)."""
    env: dict[str, Any] = {"TESTBUY_STAGE": desc.stage}
    for key, spec in desc.tables.items():
        env[spec["env"]] = {"Ref": table_id(key)}
    env[desc.raw["bucket"]["env"]] = {"Ref": BUCKET_ID}
    env[desc.raw["bus"]["env"]] = {"Ref": BUS_ID}
    for spec in desc.raw["state_machines"].values():
        env[spec["env"]] = _state_machine_arn(desc.name(spec["name"]))
    env.update(
        {
            "TESTBUY_MARKETPLACE_URL": {"Ref": "MarketplaceUrl"},
            "TESTBUY_AUTH_MODE": "cognito",
            "TESTBUY_WEBHOOK_SECRET_ARN": {"Ref": "WebhookSecretId"},  # the value is read at run time
            "POWERTOOLS_METRICS_NAMESPACE": "TestBuy",
            "POWERTOOLS_SERVICE_NAME": "testbuy",
            "POWERTOOLS_LOG_LEVEL": "INFO",
        }
    )
    return env


def _dedupe(statements: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: list[str] = []
    out = []
    for s in statements:
        key = json.dumps(s, sort_keys=True)
        if key not in seen:
            seen.append(key)
            out.append(s)
    return out


def _roles() -> tuple[str, ...]:
    from chalicelib.api.auth import Role

    return tuple(r.value for r in Role)


def _cognito(desc: StackDescription, roles: tuple[str, ...] | None) -> dict[str, Any]:
    """User pool whose groups are the roles (``cognito:groups``) and whose ``custom:lab_id`` scopes lab users."""
    resources: dict[str, Any] = {
        USER_POOL_ID: {
            "Type": "AWS::Cognito::UserPool",
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
            "Properties": {
                "UserPoolName": f"testbuy-{desc.stage}",
                "AdminCreateUserConfig": {"AllowAdminCreateUserOnly": True},
                "UsernameAttributes": ["email"],
                "AutoVerifiedAttributes": ["email"],
                "MfaConfiguration": "OPTIONAL",
                "EnabledMfas": ["SOFTWARE_TOKEN_MFA"],
                "Policies": {
                    "PasswordPolicy": {
                        "MinimumLength": 12,
                        "RequireLowercase": True,
                        "RequireUppercase": True,
                        "RequireNumbers": True,
                        "RequireSymbols": False,
                    }
                },
                "Schema": [{"Name": "lab_id", "AttributeDataType": "String", "Mutable": True}],
            },
        },
        f"{USER_POOL_ID}Client": {
            "Type": "AWS::Cognito::UserPoolClient",
            "Properties": {
                "UserPoolId": {"Ref": USER_POOL_ID},
                "ClientName": f"testbuy-{desc.stage}-cli",
                "GenerateSecret": False,
                "ExplicitAuthFlows": ["ALLOW_USER_SRP_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"],
                "PreventUserExistenceErrors": "ENABLED",
                "ReadAttributes": ["email", "custom:lab_id"],
                # Users must not be able to set their own lab: only admins (AdminUpdateUserAttributes) write it.
                "WriteAttributes": ["email"],
            },
        },
    }
    for role in roles if roles is not None else _roles():
        resources[f"{USER_POOL_ID}Group{_camel(role)}"] = {
            "Type": "AWS::Cognito::UserPoolGroup",
            "Properties": {"UserPoolId": {"Ref": USER_POOL_ID}, "GroupName": role, "Description": f"testbuy {role}"},
        }
    return resources


# ------------------------------------------------------------------------------------------------ API authorizer


def apply_cognito_authorizer(template: dict[str, Any], public: tuple[str, ...] = PUBLIC_ROUTES) -> int:
    """Require a Cognito token on every API operation except ``public`` ones; returns how many were protected.

    The routes carry no Chalice authorizer (the same code also runs with local tokens), so the API Gateway
    authorizer is added to the generated Swagger here; API Gateway then puts the user's claims, including
    ``cognito:groups`` and ``custom:lab_id``, into the request context that ``chalicelib.api.auth`` reads.
    """
    api = template["Resources"]["RestAPI"]["Properties"]["DefinitionBody"]
    api.setdefault("securityDefinitions", {})[AUTHORIZER] = {
        "type": "apiKey",
        "name": "Authorization",
        "in": "header",
        "x-amazon-apigateway-authtype": "cognito_user_pools",
        "x-amazon-apigateway-authorizer": {
            "type": "cognito_user_pools",
            "providerARNs": [{"Fn::GetAtt": [USER_POOL_ID, "Arn"]}],
        },
    }
    protected = 0
    for path, operations in api["paths"].items():
        if path in public:
            continue
        for method, op in operations.items():
            if method.lower() == "options" or not isinstance(op, dict):
                continue
            op["security"] = [{AUTHORIZER: []}]
            protected += 1
    return protected


# ------------------------------------------------------------------------------------------------ IAM policies


def render_policies(desc: StackDescription) -> dict[str, dict[str, Any]]:
    """``.chalice/`` policy file name -> document, for every stage.

    Chalice copies these files verbatim (they cannot ``Ref``), so resources are named by their stage-qualified names
    with ``*`` for region and account. ``policy-app-*``: the API handler and every task that does not move money.
    ``policy-ledger-*``: the money-moving tasks (:data:`MONEY_MOVING`) - tables and bus only: no S3, no Step
    Functions (they can neither start executions nor resume task tokens).
    """
    files: dict[str, dict[str, Any]] = {}
    for stage in STAGES:
        d = StackDescription(desc.raw, stage)
        tables = []
        for spec in d.tables.values():
            arn = f"arn:aws:dynamodb:*:*:table/{d.name(spec['name'])}"
            tables += [arn, f"{arn}/index/*"]
        logs = {
            "Sid": "Logs",
            "Effect": "Allow",
            "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": "arn:aws:logs:*:*:*",
        }
        ddb = {"Sid": "Tables", "Effect": "Allow", "Action": _DDB_WRITE, "Resource": tables}
        bus = {
            "Sid": "PublishEvents",
            "Effect": "Allow",
            "Action": "events:PutEvents",
            "Resource": f"arn:aws:events:*:*:event-bus/{d.name(d.raw['bus']['name'])}",
        }
        machines = [f"arn:aws:states:*:*:stateMachine:{d.name(s['name'])}" for s in d.raw["state_machines"].values()]
        app_only = [
            {"Sid": "StartWorkflows", "Effect": "Allow", "Action": "states:StartExecution", "Resource": machines},
            {
                # Task-token APIs support no resource-level permissions.
                "Sid": "ResumeTaskTokens",
                "Effect": "Allow",
                "Action": ["states:SendTaskSuccess", "states:SendTaskFailure"],
                "Resource": "*",
            },
            {
                "Sid": "Evidence",
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:PutObject"],
                "Resource": f"arn:aws:s3:::{d.name(d.raw['bucket']['name'])}-*/*",
            },
        ]
        files[f"policy-app-{stage}.json"] = {"Version": "2012-10-17", "Statement": [logs, ddb, bus, *app_only]}
        files[f"policy-ledger-{stage}.json"] = {"Version": "2012-10-17", "Statement": [logs, ddb, bus]}
    return files


def stale_policies(desc: StackDescription, chalice_dir: Path = ROOT / ".chalice") -> list[str]:
    """Policy files in ``.chalice/`` that differ from :func:`render_policies` (regenerate with
    ``python -m testbuy.checks policies --write``)."""
    stale = []
    for name, doc in render_policies(desc).items():
        path = chalice_dir / name
        if not path.exists() or json.loads(path.read_text()) != doc:
            stale.append(name)
    return stale


def write_policies(desc: StackDescription, chalice_dir: Path = ROOT / ".chalice") -> list[Path]:
    written = []
    for name, doc in render_policies(desc).items():
        path = chalice_dir / name
        path.write_text(json.dumps(doc, indent=2) + "\n")
        written.append(path)
    return written


# ------------------------------------------------------------------------------------------------ build


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def missing_requirements(zip_path: Path, requirements: Path) -> list[str]:
    """Pinned requirements (``name==version``) with no ``<name>-<version>.dist-info`` in the deployment zip."""
    import zipfile

    with zipfile.ZipFile(zip_path) as zf:
        dist_infos = {_norm(n.split("/", 1)[0].removesuffix(".dist-info")) for n in zf.namelist() if ".dist-info/" in n}
    missing = []
    for line in requirements.read_text().splitlines():
        req = line.split("#", 1)[0].strip()
        if not req or req.startswith("-"):
            continue
        name, _, version = req.partition("==")
        name = re.split(r"[\[<>=!~; ]", name, maxsplit=1)[0]
        if version:
            found = _norm(f"{name}-{version.strip()}") in dist_infos
        else:
            found = any(d.startswith(_norm(name) + "_") for d in dist_infos)
        if not found:
            missing.append(req)
    return missing


def _chalice_command() -> list[str]:
    exe = Path(sys.executable).parent / "chalice"
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-c", "from chalice.cli import main; main()"]


def build_package(
    out: Path, console: Any, stage: str = DEFAULT_STAGE, project_dir: Path = ROOT, exit_on_error: bool = True
) -> Path:
    """Render the fragment, run ``chalice package --merge-template``, add the API authorizer; returns ``sam.json``.

    ``chalice package`` pip-downloads ``requirements.txt`` for the Lambda platform (about a minute on a cold cache).
    A requirement it cannot install is an error here: the template would deploy functions that fail at import.
    On a :class:`PackagingError` the message goes to ``console`` and the CLI exits 1 (``exit_on_error=False``
    re-raises instead).
    """
    try:
        return _build(out, console, stage, project_dir)
    except PackagingError as exc:
        if not exit_on_error:
            raise
        import typer

        console.print(f"[red]testbuy package failed:[/] {exc}", markup=True, highlight=False)
        raise typer.Exit(1) from exc


def _build(out: Path, console: Any, stage: str, project_dir: Path) -> Path:
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    desc = StackDescription.load(stage, project_dir)
    stale = stale_policies(desc, project_dir / ".chalice")
    if stale:
        raise PackagingError(
            f"{', '.join(stale)} in .chalice/ do not match infra/stack.json; "
            "run `python -m testbuy.checks policies --write` and commit the result"
        )
    with console.status("rendering infra/stack.json"):
        fragment = render_fragment(desc)
        fragment_path = out / "infra-fragment.json"
        fragment_path.write_text(json.dumps(fragment, indent=2) + "\n")
    console.print(f"fragment: {len(fragment['Resources'])} resources -> {fragment_path}")

    env = dict(os.environ)
    env.setdefault("AWS_DEFAULT_REGION", DEFAULT_REGION)
    cmd = [
        *_chalice_command(),
        "--project-dir",
        str(project_dir),
        "package",
        "--pkg-format",
        "cloudformation",
        "--stage",
        stage,
        "--merge-template",
        str(fragment_path),
        str(out),
    ]
    with console.status(f"chalice package --stage {stage} (downloads the Lambda dependencies)"):
        proc = subprocess.run(cmd, cwd=project_dir, env=env, capture_output=True, text=True, check=False)
    output = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0:
        raise PackagingError(f"chalice package failed (exit {proc.returncode}):\n{output}")
    # chalice only warns, and only on the run that builds its dependency cache (.chalice/deployments/): check the zip.
    missing_deps = missing_requirements(out / "deployment.zip", project_dir / "requirements.txt")
    if missing_deps and not os.environ.get("TESTBUY_ALLOW_MISSING_DEPS"):
        (out / "sam.json").unlink(missing_ok=True)  # nobody deploys it by mistake
        raise PackagingError(
            f"deployment.zip lacks {', '.join(missing_deps)} from requirements.txt: chalice found no wheel for the "
            "Lambda runtime (python3.11 runs on glibc 2.26, so it takes manylinux2014/manylinux_2_26 wheels at most), "
            "and the functions would fail at import. Pin a version that has such a wheel in requirements.txt (e.g. "
            "numpy==2.2.6), or build with Python 3.12+ (runtime glibc 2.34). TESTBUY_ALLOW_MISSING_DEPS=1 packages "
            f"anyway.\n{output}"
        )

    template_path = out / "sam.json"
    template = json.loads(template_path.read_text())
    missing = [r for r in fragment["Resources"] if r not in template["Resources"]]
    if missing:
        raise PackagingError(f"merged template lacks fragment resources: {missing}")
    protected = apply_cognito_authorizer(template)
    template_path.write_text(json.dumps(template, indent=2) + "\n")
    functions = [k for k, v in template["Resources"].items() if v["Type"] == "AWS::Serverless::Function"]
    console.print(
        f"merged: {len(template['Resources'])} resources, {len(functions)} functions, "
        f"{protected} API operations behind Cognito"
    )
    return template_path
