"""The programme dashboard page: one HTML document with its CSS and JS inline (no CDN, no build step).

The same assets serve two uses: ``GET /dashboard`` (the page fetches ``GET /programs/{id}/dashboard`` with the caller's
token) and ``testbuy report`` (the data is embedded, the file opens with no server). The files ship inside
``chalicelib`` (Chalice packages the whole directory; ``pyproject.toml`` lists them as package data).
"""

from __future__ import annotations

import json
from html import escape
from importlib import resources
from typing import Any

ASSETS = ("dashboard.html", "dashboard.css", "dashboard.js")


def asset(name: str) -> str:
    if name not in ASSETS:
        raise ValueError(f"unknown asset {name}")
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")


def _embed(data: Any) -> str:
    """JSON safe inside a <script> element: no ``</script>``, ``<!--`` or line separators can end it early."""
    text = json.dumps(data, separators=(",", ":"), sort_keys=True)
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def page(data: Any = None, title: str = "testbuy programme dashboard", signin_url: str = "") -> str:
    """The page; with ``data`` (a dashboard document) embedded it draws that and fetches nothing. ``signin_url``: the
    Cognito hosted UI's sign-in address (the page offers it beside the token form)."""
    html = asset("dashboard.html")
    embedded = "null" if data is None else _embed(data)
    # the data last: nothing it holds (a programme's name) is ever taken for a marker
    return (
        html.replace("__TITLE__", escape(title, quote=True))
        .replace("__SIGNIN__", escape(signin_url, quote=True))
        .replace("/*__CSS__*/", asset("dashboard.css"))
        .replace("/*__JS__*/", asset("dashboard.js"))
        .replace("/*__DATA__*/null", embedded)
    )
