"""The embedded local stack: moto server + Step Functions executor + in-process Lambda bridge + the real HTTP API.

Everything is created from ``infra/stack.json`` with boto3 (moto's CloudFormation is not reliable enough for this),
handler code reads the same environment variables it reads in AWS, and ``AWS_ENDPOINT_URL``/``MOTO_PORT`` point
every boto3 client (ours and the Step Functions executor's) at the local moto server.
"""

from __future__ import annotations

import base64
import io
import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbuy import sfn_events
from testbuy.bridge import Bridge, chalice_handlers
from testbuy.infra import ROOT, StackDescription

REGION = "us-east-1"
ACCOUNT = "123456789012"


def load_app() -> Any:
    """Import the Chalice app module (``app.py`` at the repository root)."""
    import importlib
    import sys

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module("app")


def quiet_werkzeug() -> None:
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)


def configure_moto(endpoint: str) -> None:
    """Turn on moto's Step Functions executor and Docker-free Lambda (the bridge runs the code)."""
    body = json.dumps({"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}).encode()
    req = urllib.request.Request(
        f"{endpoint}/moto-api/config", data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback
        resp.read()


def _decode_segment(segment: str) -> str:
    """One path segment percent-decoded, keeping the characters that would change routing encoded."""
    decoded = urllib.parse.unquote(segment)
    return decoded.replace("%", "%25").replace("/", "%2F").replace("?", "%3F").replace("#", "%23")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class StackInfo:
    api_url: str
    endpoint_url: str
    bus_name: str
    env: dict[str, str]
    queues: dict[str, str] = field(default_factory=dict)
    dlqs: dict[str, str] = field(default_factory=dict)
    token_secret: str = ""
    webhook_secret: str = ""


class LocalStack:
    """Start with ``start()`` (or as a context manager); everything runs in this process on 127.0.0.1."""

    def __init__(
        self,
        stage: str = "local",
        workdir: Path | None = None,
        marketplace_url: str | None = None,
        *,
        isolated: bool = False,
        id_seed: int | None = None,
    ) -> None:
        """``isolated=True`` runs moto and the Lambda handlers in a child process (both cores; see
        ``testbuy.stack_process``); the marketplace URL must then be known up front. ``id_seed`` makes programme and
        round ids reproducible (``chalicelib.adapters.system.SeededIds``: the demo)."""
        self.stage = stage
        self.id_seed = id_seed
        self.isolated = isolated
        self._child: subprocess.Popen[str] | None = None
        self.bridge_stats: dict[str, Any] = {}
        self.workdir = workdir or (ROOT / ".testbuy")
        self.description = StackDescription.load(stage)
        self.marketplace_url = marketplace_url or "http://127.0.0.1:9/unset"
        self._moto: Any = None
        self._api: Any = None
        self._api_thread: threading.Thread | None = None
        self.bridge: Bridge | None = None
        self.info: StackInfo | None = None

    # ------------------------------------------------------------------------------------------------ lifecycle
    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> StackInfo:
        self.workdir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        endpoint = f"http://127.0.0.1:{port}"
        base_env = {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "AWS_ENDPOINT_URL": endpoint,
            "MOTO_PORT": str(port),
        }
        os.environ.update(base_env)
        for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
            os.environ.pop(var, None)
        token_secret = secrets.token_urlsafe(24)
        # Standard Webhooks secret, kept in (moto's) Secrets Manager and read by the API at run time, never placed
        # in the handlers' environment: the environment names the secret only.
        webhook_secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
        self._webhook_secret = webhook_secret
        custody_key = secrets.token_urlsafe(32)  # the per-stack key that seals custody entries (KMS in AWS)
        env = self._handler_env()
        env.update(
            {
                "TESTBUY_STAGE": self.stage,
                "TESTBUY_MARKETPLACE_URL": self.marketplace_url,
                "TESTBUY_AUTH_MODE": "local",
                "TESTBUY_TOKEN_SECRET": token_secret,
                "TESTBUY_WEBHOOK_SECRET_ARN": f"testbuy-{self.stage}-webhook-secret",
                "TESTBUY_CUSTODY_KEY": custody_key,
                "TESTBUY_METRICS_FILE": str(self.workdir / f"metrics-{port}.emf.jsonl"),
                # 80 personas x 5 orders a week: enough for a demo programme's two rounds in one week.
                "TESTBUY_PERSONA_POOL_SIZE": os.environ.get("TESTBUY_PERSONA_POOL_SIZE", "80"),
                "POWERTOOLS_METRICS_NAMESPACE": "TestBuy",
                "POWERTOOLS_SERVICE_NAME": "testbuy",
                "POWERTOOLS_LOG_LEVEL": os.environ.get("POWERTOOLS_LOG_LEVEL", "ERROR"),
            }
        )
        if self.id_seed is not None:
            env["TESTBUY_ID_SEED"] = str(self.id_seed)
        else:
            os.environ.pop("TESTBUY_ID_SEED", None)
        os.environ.update(env)
        chalice_app = load_app()
        if self.isolated:
            self._start_child(port)
        else:
            from moto.server import ThreadedMotoServer

            from testbuy import moto_fidelity

            quiet_werkzeug()
            moto_fidelity.install()
            self._moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
            self._moto.start()
            configure_moto(endpoint)
            self.bridge = Bridge(chalice_handlers(chalice_app.app), prefix=f"testbuy-{self.stage}-")
            self.bridge.install()
            sfn_events.install(chalice_app.execution_safety_net)
        self._provision(env)
        from chalicelib import bootstrap

        bootstrap.reset()
        api_url = self._serve_api(chalice_app.app)
        self.info = StackInfo(
            api_url=api_url,
            endpoint_url=endpoint,
            bus_name=env["TESTBUY_EVENT_BUS"],
            env={**base_env, **env},
            queues=self._queues,
            dlqs=self._dlqs,
            token_secret=token_secret,
            webhook_secret=webhook_secret,
        )
        state = self.workdir / "local.json"
        state.touch(mode=0o600)
        state.chmod(0o600)  # it holds the stack's token and webhook secrets
        state.write_text(
            json.dumps(
                {
                    "api_url": api_url,
                    "endpoint_url": endpoint,
                    "bus_name": self.info.bus_name,
                    "token_secret": token_secret,
                    "webhook_secret": webhook_secret,
                    "marketplace_url": self.marketplace_url,
                    "pid": os.getpid(),
                },
                indent=2,
            )
        )
        from testbuy.profiles import publish_state  # `testbuy token` finds the stack from any directory

        publish_state(self.stage, json.loads((self.workdir / "local.json").read_text()))
        return self.info

    @property
    def state_file(self) -> Path:
        """Where the running stack's URLs and secrets are (``testbuy token`` reads it)."""
        return self.workdir / "local.json"

    def _handler_env(self) -> dict[str, str]:
        """What the handlers read, computed from the description (names and ARNs are deterministic)."""
        d = self.description
        env = {spec["env"]: d.name(spec["name"]) for spec in d.tables.values()}
        env[d.raw["bucket"]["env"]] = d.name(d.raw["bucket"]["name"])
        env[d.raw["bus"]["env"]] = d.name(d.raw["bus"]["name"])
        for spec in d.raw["state_machines"].values():
            env[spec["env"]] = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{d.name(spec['name'])}"
        return env

    def _start_child(self, port: int) -> None:
        stats = self.workdir / f"bridge-stats-{port}.json"
        self._stats_path = stats
        self._child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "testbuy.stack_process",
                "--port",
                str(port),
                "--stage",
                self.stage,
                "--stats",
                str(stats),
            ],
            cwd=str(ROOT),
            env={**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")},
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._child.stdout is not None
        line = self._child.stdout.readline().strip()
        if line != "ready":
            self._child.kill()
            raise RuntimeError("the local AWS process did not start; run with isolated=False to see why")

    def set_marketplace_url(self, url: str) -> None:
        """Point the handlers at a marketplace started after the stack (same process)."""
        self.marketplace_url = url
        os.environ["TESTBUY_MARKETPLACE_URL"] = url
        if self.info:
            self.info.env["TESTBUY_MARKETPLACE_URL"] = url
        from chalicelib import bootstrap

        bootstrap.reset()

    def stop(self) -> None:
        from testbuy.profiles import withdraw_state

        withdraw_state(self.stage)
        if self._api is not None:
            self._api.shutdown()
            self._api.server.server_close()
            self._api = None
        if self.bridge is not None:
            self.bridge.uninstall()
            sfn_events.uninstall()
        if self._moto is not None:
            self._moto.stop()
            self._moto = None
        if self._child is not None:
            self._child.terminate()
            try:
                self._child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._child.kill()
            if self._stats_path.exists():
                self.bridge_stats = json.loads(self._stats_path.read_text())
            self._child = None

    # ------------------------------------------------------------------------------------------------ moto
    def client(self, service: str) -> Any:
        import boto3

        return boto3.client(service, region_name=REGION)

    def _provision(self, expected: dict[str, str]) -> None:
        d = self.description
        env: dict[str, str] = {}
        ddb = self.client("dynamodb")
        for spec in d.tables.values():
            ddb.create_table(**d.table_definition(spec))
            env[spec["env"]] = d.name(spec["name"])
        s3 = self.client("s3")
        bucket = d.name(d.raw["bucket"]["name"])
        s3.create_bucket(Bucket=bucket)
        env[d.raw["bucket"]["env"]] = bucket
        events = self.client("events")
        bus = d.name(d.raw["bus"]["name"])
        events.create_event_bus(Name=bus)
        env[d.raw["bus"]["env"]] = bus
        sqs = self.client("sqs")
        self._queues: dict[str, str] = {}
        self._dlqs: dict[str, str] = {}
        for key, q in d.raw["queues"].items():
            dlq_url = sqs.create_queue(QueueName=d.name(q["dlq"]))["QueueUrl"]
            dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            url = sqs.create_queue(
                QueueName=d.name(q["name"]),
                Attributes={
                    "RedrivePolicy": json.dumps(
                        {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(q["max_receives"])}
                    ),
                    "VisibilityTimeout": "30",
                },
            )["QueueUrl"]
            self._queues[key] = url
            self._dlqs[key] = dlq_url
        for rule in d.raw["rules"].values():
            name = d.name(rule["name"])
            events.put_rule(Name=name, EventBusName=bus, EventPattern=json.dumps(rule["pattern"]))
            url = self._queues[rule["queue"]]
            arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            events.put_targets(Rule=name, EventBusName=bus, Targets=[{"Id": rule["queue"], "Arn": arn}])
        self.client("secretsmanager").create_secret(
            Name=os.environ["TESTBUY_WEBHOOK_SECRET_ARN"],
            SecretString=json.dumps({"current": self._webhook_secret, "previous": None}),
        )
        iam = self.client("iam")
        role_arn = iam.create_role(
            RoleName=f"testbuy-{self.stage}-tasks",
            AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
        )["Role"]["Arn"]
        lam = self.client("lambda")
        zipped = io.BytesIO()
        with zipfile.ZipFile(zipped, "w") as zf:
            zf.writestr("app.py", "# code runs in-process through testbuy.bridge\n")
        substitutions: dict[str, str] = {}
        for placeholder, task in d.functions.items():
            fn = lam.create_function(
                FunctionName=d.function_name(task),
                Runtime="python3.11",
                Role=role_arn,
                Handler=f"app.{task}",
                Code={"ZipFile": zipped.getvalue()},
            )
            substitutions[placeholder] = fn["FunctionArn"]
        sfn = self.client("stepfunctions")
        for key, spec in d.raw["state_machines"].items():
            definition = d.asl(key)
            for placeholder, value in substitutions.items():
                definition = definition.replace("${" + placeholder + "}", value)
            arn = sfn.create_state_machine(
                name=d.name(spec["name"]), definition=definition, roleArn=role_arn, type="STANDARD"
            )["stateMachineArn"]
            env[spec["env"]] = arn
        # --- evidence (issue 10 item 5): the package-signing key, an ECC_NIST_P256 key in (moto's) KMS as in AWS;
        # its ARN is known only once created, so it joins the environment here (the API reads settings lazily)
        for spec in d.raw.get("keys", {}).values():
            if spec["usage"] == "SIGN_VERIFY":
                arn = self.client("kms").create_key(
                    KeySpec=spec["spec"], KeyUsage=spec["usage"], Description=spec["description"][:200]
                )["KeyMetadata"]["Arn"]
                os.environ[spec["env"]] = expected[spec["env"]] = arn
        # --- end evidence
        wrong = {k: v for k, v in env.items() if expected.get(k) != v}
        if wrong:
            raise RuntimeError(f"provisioned resources differ from the computed environment: {wrong}")

    # ------------------------------------------------------------------------------------------------ API
    def _serve_api(self, app: Any) -> str:
        from chalice.config import Config
        from chalice.local import ChaliceRequestHandler, LocalDevServer

        lock = threading.Lock()

        class SerializedHandler(ChaliceRequestHandler):
            """Chalice keeps ``current_request`` on the app object, which is safe in Lambda (one request per
            container) but not across threads: requests are served concurrently, handled one at a time."""

            protocol_version = "HTTP/1.1"

            def _generic_handle(self) -> None:
                # API Gateway hands path parameters over percent-decoded; Chalice's local gateway does not.
                raw_path: str = getattr(self, "path", "")
                route, sep, query = raw_path.partition("?")
                self.path = "/".join(_decode_segment(seg) for seg in route.split("/")) + sep + query
                with lock:
                    super()._generic_handle()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = do_PATCH = do_OPTIONS = _generic_handle

            def __getattr__(self, name: str) -> Any:
                # any other method (TRACE, QUERY, ...) is answered 405 in the documented body, not http.server's 501
                if name.startswith("do_"):
                    return self._generic_handle
                raise AttributeError(name)

            def _send_error_response(self, error: Any) -> None:
                """Chalice's local gateway answers an unknown path itself (403 "Missing Authentication Token", like
                API Gateway); answer it as the documented 404 ErrorBody instead (chalicelib/api/system.py does
                the same for Chalice's 405/415)."""
                body = json.dumps(
                    {"error": {"code": "not_found", "message": "no such path", "details": [{"field": "(path)"}]}}
                )
                self._send_http_response(404, {"Content-Type": "application/json"}, body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        port = free_port()
        config = Config(chalice_stage=self.stage, config_from_disk={})
        self._api = LocalDevServer(app, config, "127.0.0.1", port, handler_cls=SerializedHandler)
        self._api_thread = threading.Thread(target=self._api.server.serve_forever, daemon=True)
        self._api_thread.start()
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        return url
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("the local API did not come up within 10 s")
