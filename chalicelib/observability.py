"""Structured logging and CloudWatch EMF metrics through aws-lambda-powertools.

Metrics are serialized by powertools' EMF provider. In Lambda the EMF blob goes to stdout (CloudWatch picks it up);
when ``TESTBUY_METRICS_FILE`` is set (the embedded local stack) the same blob is appended to that file instead, so a
local run keeps its metrics and its terminal stays readable.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Mapping
from functools import lru_cache

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

_FILE_LOCK = threading.Lock()


@lru_cache(maxsize=1)
def logger() -> Logger:
    """The service logger (JSON lines, keys not f-strings)."""
    return Logger(service="testbuy")


class EmfMetrics:
    """Collects metrics per dimension set and writes one EMF document per set on ``flush``."""

    def __init__(self, namespace: str, sink_path: str | None = None) -> None:
        self._namespace = namespace
        self._sink_path = sink_path
        self._pending: dict[tuple[tuple[str, str], ...], list[tuple[str, float, str]]] = {}
        self._lock = threading.Lock()

    def add(self, name: str, value: float, unit: str, dimensions: Mapping[str, str] | None = None) -> None:
        key = tuple(sorted((dimensions or {}).items()))
        with self._lock:
            self._pending.setdefault(key, []).append((name, value, unit))

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
        for dims, values in pending.items():
            provider = EphemeralMetrics(namespace=self._namespace, service="testbuy")
            for dim_name, dim_value in dims:
                provider.add_dimension(name=dim_name, value=dim_value)
            for name, value, unit in values:
                provider.add_metric(name=name, unit=MetricUnit(unit), value=value)
            blob = json.dumps(provider.serialize_metric_set(), separators=(",", ":"))
            self._write(blob)

    def _write(self, blob: str) -> None:
        if self._sink_path is None:
            sys.stdout.write(blob + "\n")
            return
        with _FILE_LOCK, open(self._sink_path, "a", encoding="utf-8") as fh:
            fh.write(blob + "\n")
