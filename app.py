"""testbuy Chalice app: wires blueprints, Lambda entry points and schedules. No logic lives here."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chalice.app import Chalice, Rate

from chalicelib.api import appeals, dashboard, evidence_packages, finance, lab, leads, programs, system, webhooks
from chalicelib.domain.lifecycle import EXECUTION_ENDED_BADLY

# The task handlers (and the statistics behind them: numpy, sampling, estimation, risk) load on a task function's
# first call, never when the API function starts: ``import app`` stays light (tests/unit/test_light_import.py).
if TYPE_CHECKING:
    from chalicelib import tasks
else:
    tasks = system.LazyModule("chalicelib.tasks")

app = Chalice(app_name="testbuy")
# Routes exist only through chalicelib.api.declare.endpoint (one declaration per route); no @app.route here.
app.register_blueprint(system.bp)
app.register_blueprint(programs.bp)
app.register_blueprint(lab.bp)
app.register_blueprint(finance.bp)
app.register_blueprint(webhooks.bp)
app.register_blueprint(dashboard.bp)
app.register_blueprint(leads.bp)  # rings and leads (issue 10 items 3 and 4)
app.register_blueprint(appeals.bp)  # appeals (issue 10 item 2)
app.register_blueprint(evidence_packages.bp)  # evidence (issue 10 item 5)


# --- state-machine tasks: one Lambda function each (money-moving ones get their own IAM policy in .chalice/) ---


@app.lambda_function(name="round_load_program")
def round_load_program(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return tasks.run("round_load_program", event)


@app.lambda_function(name="round_sample_sellers")
def round_sample_sellers(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return tasks.run("round_sample_sellers", event)


@app.lambda_function(name="round_start_order")
def round_start_order(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return tasks.run("round_start_order", event)


@app.lambda_function(name="round_await_orders")
def round_await_orders(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return tasks.run("round_await_orders", event)


@app.lambda_function(name="round_aggregate")
def round_aggregate(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return tasks.run("round_aggregate", event)


@app.lambda_function(name="round_failed")
def round_failed(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return tasks.run("round_failed", event)


@app.lambda_function(name="order_reserve_budget")
def order_reserve_budget(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return tasks.run("order_reserve_budget", event)


@app.lambda_function(name="order_assign_persona")
def order_assign_persona(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return tasks.run("order_assign_persona", event)


@app.lambda_function(name="order_place")
def order_place(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return tasks.run("order_place", event)


@app.lambda_function(name="order_await_delivery")
def order_await_delivery(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return tasks.run("order_await_delivery", event)


@app.lambda_function(name="order_forward_to_lab")
def order_forward_to_lab(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return tasks.run("order_forward_to_lab", event)


@app.lambda_function(name="order_await_verdict")
def order_await_verdict(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return tasks.run("order_await_verdict", event)


@app.lambda_function(name="order_next_lab")
def order_next_lab(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return tasks.run("order_next_lab", event)


@app.lambda_function(name="order_capture")
def order_capture(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return tasks.run("order_capture", event)


@app.lambda_function(name="order_refund")
def order_refund(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return tasks.run("order_refund", event)


@app.lambda_function(name="order_enforce")
def order_enforce(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return tasks.run("order_enforce", event)


@app.lambda_function(name="order_publish")
def order_publish(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return tasks.run("order_publish", event)


@app.lambda_function(name="order_release")
def order_release(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return tasks.run("order_release", event)


@app.lambda_function(name="order_finalize")
def order_finalize(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return tasks.run("order_finalize", event)


@app.lambda_function(name="order_reconcile")
def order_reconcile(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return tasks.run("order_reconcile", event)


@app.lambda_function(name="order_cancel")
def order_cancel(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return tasks.run("order_cancel", event)


@app.lambda_function(name="order_needs_reconciliation")
def order_needs_reconciliation(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return tasks.run("order_needs_reconciliation", event)


# --- appeals (issue 10 item 2): the tasks of the appeal machine


@app.lambda_function(name="appeal_assign_retest_lab")
def appeal_assign_retest_lab(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return tasks.run("appeal_assign_retest_lab", event)


@app.lambda_function(name="appeal_await_retest")
def appeal_await_retest(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return tasks.run("appeal_await_retest", event)


@app.lambda_function(name="appeal_decide")
def appeal_decide(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return tasks.run("appeal_decide", event)


@app.lambda_function(name="appeal_rescind")
def appeal_rescind(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return tasks.run("appeal_rescind", event)


@app.lambda_function(name="appeal_expire")
def appeal_expire(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return tasks.run("appeal_expire", event)


@app.lambda_function(name="appeal_publish")
def appeal_publish(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return tasks.run("appeal_publish", event)


# --- end appeals


# Safety net: Step Functions reports its executions' status changes on the default bus (where on_cw_event binds).
# Both machines' executions that end FAILED, TIMED_OUT or ABORTED run no Catch: this runs their compensation.
@app.on_cw_event(
    {
        "source": ["aws.states"],
        "detail-type": ["Step Functions Execution Status Change"],
        "detail": {"status": list(EXECUTION_ENDED_BADLY)},
    },
    name="execution_safety_net",
)
def execution_safety_net(event: Any) -> dict[str, Any]:
    return tasks.execution_ended(event.to_dict())


@app.schedule(Rate(1, unit=Rate.HOURS), name="ledger_sweeper")
def ledger_sweeper(event: Any) -> dict[str, Any]:
    return tasks.sweep()
