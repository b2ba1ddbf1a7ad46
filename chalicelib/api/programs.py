"""Program manager routes. The statistics (numpy, sampling, estimation, risk) are imported by the handlers that need
them, never when the API function starts (``import app`` stays light)."""

from __future__ import annotations

from chalice.app import Blueprint

from chalicelib.api.common import ENF, FIN, PM, correlation_id
from chalicelib.api.declare import ID_MAX_LENGTH, ID_PATTERN, Call, Ok, QueryParam, Refusal, Reply, endpoint
from chalicelib.api.schemas import (
    Funded,
    Imported,
    Metrics,
    Program,
    ProgramView,
    RefundFeedStored,
    RoundOrders,
    RoundView,
)
from chalicelib.bootstrap import deps
from chalicelib.domain.ledger import Balance
from chalicelib.domain.models import (
    FundRequest,
    OrderStatus,
    ProgramCreate,
    RefundFeedIn,
    Round,
    RoundStart,
    SellerImport,
)
from chalicelib.services import finance

bp = Blueprint(__name__)


def _balance(b: Balance) -> dict[str, int]:
    """The balance with the same fields as the finance routes (``spent`` = captured - recovered): one function."""
    return finance._balance_dict(b)


@endpoint(
    bp,
    "POST",
    "/programs",
    summary="Create a programme (ledger account with no funds, persona pool)",
    tag="programs",
    roles=(PM,),
    request=ProgramCreate,
    ok=(Ok(201, "the programme was created", Program),),
)
def create_program(call: Call) -> Reply:
    from chalicelib.services import programs

    return Reply(201, programs.create_program(deps(), call.body).model_dump(mode="json"))


@endpoint(
    bp,
    "GET",
    "/programs/{program_id}",
    summary="A programme and its ledger balance (the same balance fields as the finance routes)",
    tag="programs",
    roles=(PM, FIN),
    ok=(Ok(200, "the programme with its balance", ProgramView),),
    errors=(404,),
)
def get_program(call: Call) -> Reply:
    d = deps()
    program_id = call.params["program_id"]
    program = d.programs.get_program(program_id)
    return Reply(200, {**program.model_dump(mode="json"), "balance": _balance(d.ledger.balance(program_id))})


@endpoint(
    bp,
    "POST",
    "/programs/{program_id}/funding",
    summary="Add funds (idempotent on reference)",
    tag="programs",
    roles=(PM, FIN),
    request=FundRequest,
    ok=(Ok(200, "the funds were added (or this reference was already applied); the new balance", Funded),),
    errors=(404, 409),
    description="400 currency_mismatch when the currency is not the programme's; 409 idempotency_conflict "
    "when the reference was used before with a different amount or currency.",
    refusals=(
        Refusal(400, "currency_mismatch", "^currency$", "currency is the programme's currency"),
        Refusal(400, "invalid_input", "^amount$", "the programme's total funding stays within 10^15 minor units"),
    ),
)
def fund(call: Call) -> Reply:
    from chalicelib.services import programs

    program_id = call.params["program_id"]
    balance = programs.fund_program(deps(), program_id, call.body)
    return Reply(200, {"program_id": program_id, "balance": _balance(balance)})


@endpoint(
    bp,
    "POST",
    "/programs/{program_id}/sellers",
    summary="Import a batch of sellers into the sampling frame (all or nothing)",
    tag="programs",
    roles=(PM,),
    request=SellerImport,
    ok=(Ok(200, "the batch was imported; how many sellers", Imported),),
    errors=(404,),
    refusals=(
        Refusal(400, "invalid_input", r"^sellers\[\d+\]\.seller_id$", "seller ids are unique within a batch"),
        Refusal(400, "invalid_input", r"^sellers\[\d+\]\.signals$", "each seller gives risk or signals"),
    ),
)
def import_sellers(call: Call) -> Reply:
    from chalicelib.services import programs

    return Reply(
        200, programs.import_sellers(deps(), call.params["program_id"], call.body, correlation_id(call.request))
    )


@endpoint(
    bp,
    "POST",
    "/programs/{program_id}/rounds",
    summary="Start a sampling round",
    tag="programs",
    roles=(PM,),
    request=RoundStart,
    body_optional=True,
    ok=(Ok(202, "the round was recorded and its workflow started", Round),),
    errors=(404, 409),
    description="409 invalid_state outside the programme period or without eligible sellers; "
    "409 insufficient_funds when the available budget cannot pay for the cheapest order.",
    refusals=(Refusal(400, "invalid_input", "^budget$", "a round budget covers the cheapest eligible order"),),
)
def start_round(call: Call) -> Reply:
    from chalicelib.services import rounds

    return Reply(202, rounds.start_round(deps(), call.params["program_id"], call.body).model_dump(mode="json"))


@endpoint(
    bp,
    "GET",
    "/programs/{program_id}/rounds/{round_id}",
    summary="A round with its orders counted by status",
    tag="programs",
    roles=(PM, FIN),
    ok=(Ok(200, "the round", RoundView),),
    errors=(404,),
)
def get_round(call: Call) -> Reply:
    from chalicelib.services import rounds

    return Reply(200, rounds.round_view(deps(), call.params["program_id"], call.params["round_id"]))


ORDERS_PAGE_DEFAULT = 100


@endpoint(
    bp,
    "GET",
    "/programs/{program_id}/rounds/{round_id}/orders",
    summary="A round's orders with their status (filterable by status, paginated by order id)",
    tag="programs",
    roles=(PM,),
    ok=(Ok(200, "a page of the round's orders, by order id", RoundOrders),),
    errors=(404,),
    query=(
        QueryParam("status", "only orders in this status", tuple(s.value for s in OrderStatus)),
        QueryParam(
            "limit",
            f"orders per page, 1 to 1000 (default {ORDERS_PAGE_DEFAULT})",
            pattern=r"^(?:[1-9][0-9]{0,2}|1000)$",
            max_length=4,
        ),
        QueryParam(
            "cursor",
            "next_cursor of the previous page",
            pattern=ID_PATTERN,
            max_length=ID_MAX_LENGTH,
        ),
    ),
)
def round_orders(call: Call) -> Reply:
    from chalicelib.services import rounds

    q = call.query
    page = rounds.round_orders(
        deps(),
        call.params["program_id"],
        call.params["round_id"],
        status=q.get("status"),
        cursor=q.get("cursor"),
        limit=int(q.get("limit", ORDERS_PAGE_DEFAULT)),
    )
    return Reply(200, page)


@endpoint(
    bp,
    "GET",
    "/programs/{program_id}/metrics",
    summary="Programme metrics: hit rate, design-weighted prevalence with its interval, spend, cost per hit",
    tag="programs",
    roles=(PM, FIN, ENF),
    ok=(Ok(200, "the metrics", Metrics),),
    errors=(404,),
)
def metrics(call: Call) -> Reply:
    from chalicelib.services import rounds  # numpy and the estimators: loaded on the first metrics request

    d = deps()
    return Reply(200, rounds.program_metrics(d, d.programs.get_program(call.params["program_id"])))


@endpoint(
    bp,
    "POST",
    "/programs/{program_id}/marketplace-refunds",
    summary="Ingest one month of the marketplace refund feed (marketplace-wide suspect-refund rate)",
    tag="programs",
    roles=(PM, FIN),
    request=RefundFeedIn,
    ok=(Ok(200, "stored; the month's rate", RefundFeedStored),),
    errors=(404,),
)
def marketplace_refunds(call: Call) -> Reply:
    from chalicelib.services import programs

    return Reply(200, programs.ingest_refund_feed(deps(), call.params["program_id"], call.body))
