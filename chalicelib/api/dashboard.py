"""The programme dashboard: the page (public HTML: it holds no data) and its one data route (the caller's token)."""

from __future__ import annotations

from chalice.app import Blueprint, Response

from chalicelib.api.common import FIN, PM
from chalicelib.api.declare import Call, Ok, Reply, endpoint
from chalicelib.api.schemas import Dashboard
from chalicelib.bootstrap import deps

bp = Blueprint(__name__)


@endpoint(
    bp,
    "GET",
    "/dashboard",
    summary="The programme dashboard page (HTML; it fetches its data with the caller's token)",
    tag="dashboard",
    auth="none",
    ok=(Ok(200, "the page: HTML with its CSS and JS inline, no data", None, media_type="text/html"),),
    description="Public because a browser navigating to a page sends no Authorization header; the page holds no data "
    "and reads the token from the URL fragment (#program=ID&token=... locally, #id_token=... from the Cognito hosted "
    "UI) or a form, then calls GET /programs/{program_id}/dashboard with it.",
)
def dashboard_page(call: Call) -> Response:
    from chalicelib.config import settings
    from chalicelib.web import page

    return Response(
        body=page(signin_url=settings().signin_url),
        status_code=200,
        headers={
            "Content-Type": "text/html; charset=utf-8",
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "DENY",
            # inline script and style only; the data comes from this API (connect-src 'self')
            "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
            "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        },
    )


@endpoint(
    bp,
    "GET",
    "/programs/{program_id}/dashboard",
    summary="Every figure of the programme dashboard: burn-down and forecast, estimates, categories, enforcement, "
    "marketplace refund rate, orders and overdue ones, lab turnaround, reconciliation",
    tag="dashboard",
    roles=(PM, FIN),
    ok=(Ok(200, "the dashboard's data", Dashboard),),
    errors=(404,),
)
def dashboard_data(call: Call) -> Reply:
    from chalicelib.services import dashboard  # numpy and the estimators: loaded on the first request

    return Reply(200, dashboard.program_dashboard(deps(), call.params["program_id"]))
