"""``testbuy events tail``: a throw-away subscriber on the stack's event bus, for a team trying testbuy out.

It creates an SQS queue and an EventBridge rule on the bus (``source`` prefix ``testbuy.``, optionally one
detail-type and one programme) targeting the queue, prints events as they arrive (deduplicated by
``detail.metadata.event_id``: delivery is at least once), and on Ctrl-C, ``--max`` or ``--for`` removes the rule,
its target and the queue. Locally the AWS endpoint and the bus come from the running stack; in AWS from the
default credentials and ``--bus`` (``$TESTBUY_EVENT_BUS`` or the profile's ``event_bus``).
A production subscriber is a rule of its own in its own stack (see the README, "For enforcement").
"""

from __future__ import annotations

import json
import secrets
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import typer

from testbuy.commands.common import JSON_OPT, OK, PROFILE_OPT, UNAVAILABLE, USAGE, err, fail, out

events = typer.Typer(no_args_is_help=True, help="Follow testbuy's events on the bus.")


def pattern(detail_type: str | None, program_id: str | None) -> dict[str, Any]:
    """The rule's event pattern: every testbuy event, or one detail-type, or one programme's."""
    p: dict[str, Any] = {"source": [{"prefix": "testbuy."}]}
    if detail_type:
        p["detail-type"] = [detail_type]
    if program_id:
        p["detail"] = {"metadata": {"program_id": [program_id]}}
    return p


@dataclass
class Tail:
    """The queue and rule of one ``events tail``; ``open()`` creates them, ``close()`` removes them."""

    events: Any
    sqs: Any
    bus: str
    event_pattern: dict[str, Any]
    name: str = field(default_factory=lambda: f"testbuy-tail-{secrets.token_hex(4)}")
    queue_url: str | None = None
    rule_created: bool = False
    seen: set[str] = field(default_factory=set)

    def open(self) -> None:
        self.queue_url = self.sqs.create_queue(QueueName=self.name)["QueueUrl"]
        queue_arn = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        rule_arn = self.events.put_rule(
            Name=self.name, EventBusName=self.bus, EventPattern=json.dumps(self.event_pattern), State="ENABLED"
        )["RuleArn"]
        self.rule_created = True
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": "events.amazonaws.com"},
                    "Action": "sqs:SendMessage",
                    "Resource": queue_arn,
                    "Condition": {"ArnEquals": {"aws:SourceArn": rule_arn}},
                }
            ],
        }
        self.sqs.set_queue_attributes(QueueUrl=self.queue_url, Attributes={"Policy": json.dumps(policy)})
        self.events.put_targets(Rule=self.name, EventBusName=self.bus, Targets=[{"Id": "tail", "Arn": queue_arn}])

    def poll(self, wait_seconds: int = 1) -> list[dict[str, Any]]:
        """New events (each once, by event id), oldest first; their messages are deleted."""
        assert self.queue_url is not None
        got = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=wait_seconds)
        fresh: list[dict[str, Any]] = []
        for msg in got.get("Messages", []):
            try:
                event = json.loads(msg["Body"])
            except ValueError:
                event = {"unparsed": msg["Body"]}
            event_id = str(((event.get("detail") or {}).get("metadata") or {}).get("event_id") or msg["MessageId"])
            if event_id not in self.seen:
                self.seen.add(event_id)
                fresh.append(event)
            self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=msg["ReceiptHandle"])
        return fresh

    def close(self) -> list[str]:
        """Remove what ``open()`` created; returns what could not be removed (with why)."""
        problems: list[str] = []
        if self.rule_created:
            try:
                self.events.remove_targets(Rule=self.name, EventBusName=self.bus, Ids=["tail"])
                self.events.delete_rule(Name=self.name, EventBusName=self.bus)
                self.rule_created = False
            except Exception as exc:  # report and go on: the queue must still go
                problems.append(f"rule {self.name} on {self.bus}: {exc}")
        if self.queue_url is not None:
            try:
                self.sqs.delete_queue(QueueUrl=self.queue_url)
                self.queue_url = None
            except Exception as exc:
                problems.append(f"queue {self.name}: {exc}")
        return problems


def _line(event: dict[str, Any]) -> str:
    meta = (event.get("detail") or {}).get("metadata") or {}
    data = (event.get("detail") or {}).get("data") or {}
    brief = ", ".join(f"{k}={v}" for k, v in list(data.items())[:4])
    when = meta.get("occurred_at", event.get("time", ""))
    return f"{when} {event.get('detail-type', '?')} {meta.get('program_id', '')} {brief}"


@events.command("tail")
def tail(
    detail_type: str | None = typer.Option(None, help="only this event, e.g. CounterfeitConfirmed"),
    program_id: str | None = typer.Option(None, "--program", "-p", help="only this programme's events"),
    bus: str | None = typer.Option(None, help="event bus (default: $TESTBUY_EVENT_BUS, profile, local stack)"),
    endpoint_url: str | None = typer.Option(None, help="AWS endpoint (default: the local stack's, else AWS)"),
    max_events: int | None = typer.Option(None, "--max", min=1, help="stop after this many events"),
    seconds: float | None = typer.Option(None, "--for", min=0.0, help="stop after this many seconds"),
    as_json: bool = JSON_OPT,
    profile: str | None = PROFILE_OPT,
) -> None:
    """Print testbuy events as they arrive, one a line (JSON lines with --json); Ctrl-C removes the queue and rule."""
    import boto3

    from testbuy.profiles import ConfigError, find_local_stack, load_profile

    try:
        prof = load_profile(profile)
    except ConfigError as exc:
        fail(USAGE, str(exc), as_json=as_json)
    import os

    local = find_local_stack()
    bus = bus or os.environ.get("TESTBUY_EVENT_BUS") or prof.get("event_bus") or (local or {}).get("bus_name")
    endpoint = (
        endpoint_url
        or os.environ.get("TESTBUY_AWS_ENDPOINT_URL")
        or prof.get("aws_endpoint_url")
        or (local or {}).get("endpoint_url")
    )
    if not bus:
        fail(
            USAGE,
            "which bus? pass --bus, set TESTBUY_EVENT_BUS, or start a local stack (`make serve`)",
            as_json=as_json,
        )
    kwargs: dict[str, Any] = {}  # in AWS: boto3's own region and credential chain
    if os.environ.get("AWS_REGION"):
        kwargs["region_name"] = os.environ["AWS_REGION"]
    if endpoint:
        kwargs["endpoint_url"] = endpoint
        if local is not None and endpoint == local.get("endpoint_url"):
            # moto's fixed account and region (testbuy.localstack), whatever the user's AWS configuration says
            kwargs.update(region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")  # noqa: S106
    t = Tail(boto3.client("events", **kwargs), boto3.client("sqs", **kwargs), bus, pattern(detail_type, program_id))
    try:
        t.open()
    except KeyboardInterrupt:
        t.close()
        raise typer.Exit(OK) from None
    except Exception as exc:
        problems = t.close()
        fail(
            UNAVAILABLE,
            f"cannot subscribe to {bus}: {exc}",
            as_json=as_json,
            details=[{"message": p} for p in problems],
        )
    # on stderr even with --json (stdout carries the events only): a script can wait for this line
    err.print(f"listening on {bus} (queue and rule {t.name}); Ctrl-C to stop and remove them", soft_wrap=True)
    count = 0
    deadline = None if seconds is None else time.monotonic() + seconds
    try:
        while (max_events is None or count < max_events) and (deadline is None or time.monotonic() < deadline):
            for event in t.poll(1):
                count += 1
                if as_json:
                    sys.stdout.write(json.dumps(event) + "\n")
                    sys.stdout.flush()
                else:
                    out.print(_line(event), soft_wrap=True, markup=False, highlight=False)
                if max_events is not None and count >= max_events:
                    break
    except KeyboardInterrupt:
        pass
    finally:
        problems = t.close()
        for p in problems:
            err.print(f"[red]could not remove[/] {p}; remove it by hand", soft_wrap=True)
        if not as_json:
            err.print(f"{count} events; removed queue and rule {t.name}", soft_wrap=True)
    raise typer.Exit(OK if not problems else UNAVAILABLE)
