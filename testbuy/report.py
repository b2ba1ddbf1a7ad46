"""``testbuy report``: one self-contained HTML file of a programme that opens with no server.

It is the dashboard page (``chalicelib/web``: the same HTML, CSS and drawing JS) with the data of
``GET /programs/{id}/dashboard`` embedded: the burn-down and forecast, the estimates with their method and 95%
interval, categories, enforcement by rule and the policy version, the marketplace refund rate, orders and overdue
ones, lab turnaround and the ledger reconciliation. Nothing is fetched when it opens: no CDN, no API call.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from chalicelib.web import page
from testbuy.client import ApiCallError, ApiClient

#: The one URL the page holds: the SVG namespace name, an identifier that no browser fetches.
SVG_NAMESPACE = "http://www.w3.org/2000/svg"
#: An attribute or CSS rule that loads something, unless from an inline ``data:`` URI (the page's empty favicon).
_EXTERNAL = re.compile(r"""(?:\b(?:src|href)\s*=|@import|url\()\s*(?!["']?data:)""", re.IGNORECASE)


def fetch_dashboard(api_url: str, token: str, program_id: str) -> dict[str, Any]:
    """The dashboard document from a running API (``ApiCallError`` on any answer but 200)."""
    from urllib.parse import quote

    data = ApiClient(api_url, token).call("GET", f"/programs/{quote(program_id, safe='')}/dashboard", expect=(200,))
    if not isinstance(data, dict):
        raise ApiCallError(200, data)
    return data


def render(data: dict[str, Any]) -> str:
    """The report's HTML for a dashboard document."""
    name = str(data.get("program", {}).get("name", "programme"))
    return page(data, title=f"{name} - testbuy programme report")


def external_references(html: str) -> list[str]:
    """Anything in ``html`` a browser could fetch from elsewhere (empty for a self-contained file)."""
    found = [m.group(0) for m in _EXTERNAL.finditer(html)]
    found += [u for u in re.findall(r"https?://[^\s\"'<>)]*", html) if u != SVG_NAMESPACE]
    return found


def write_report(data: dict[str, Any], out: Path) -> Path:
    html = render(data)
    problems = external_references(html)
    if problems:  # pragma: no cover - the assets are ours; tests/unit/test_report.py keeps them self-contained
        raise RuntimeError(f"the report would reference outside resources: {problems[:5]}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html, encoding="utf-8")
    return out
