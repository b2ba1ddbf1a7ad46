"""Cold-start cost of the API function: ``import app`` against the bare import of the libraries it stands on.

Each figure is the best of ``--runs`` fresh interpreters (the minimum is the least noisy estimate of the work done;
the machine is shared). Prints one JSON line: seconds for each, their ratio, and whether the statistics stack
(numpy, chalicelib.domain.{estimation,sampling,risk}) was imported by ``import app`` (it must not be).

    python benchmarks/import_time.py [--runs 7]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIBRARIES = (
    "import boto3, pydantic, jwt; from chalice.app import Chalice, Blueprint, Response; "
    "from aws_lambda_powertools import Logger; from aws_lambda_powertools.metrics import EphemeralMetrics"
)
APP = "import app"
HEAVY = ("numpy", "chalicelib.domain.estimation", "chalicelib.domain.sampling", "chalicelib.domain.risk")
_PROBE = """
import json, sys, time
t = time.perf_counter()
exec({code!r})
elapsed = time.perf_counter() - t
print(json.dumps({{"seconds": elapsed, "heavy": [m for m in {heavy!r} if m in sys.modules]}}))
"""


def measure(code: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE.format(code=code, heavy=HEAVY)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "0"},
    )
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def run(runs: int = 7) -> dict[str, object]:
    measure(APP)  # warm the bytecode caches once
    libs = [measure(LIBRARIES) for _ in range(runs)]
    apps = [measure(APP) for _ in range(runs)]
    lib_s = min(float(str(r["seconds"])) for r in libs)
    app_s = min(float(str(r["seconds"])) for r in apps)
    return {
        "benchmark": "import_time",
        "runs": runs,
        "libraries_s": round(lib_s, 4),
        "import_app_s": round(app_s, 4),
        "ratio": round(app_s / lib_s, 3),
        "limit": 1.2,
        "heavy_modules_imported": sorted({str(m) for r in apps for m in r["heavy"]}),  # type: ignore[attr-defined]
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    print(json.dumps(run(parser.parse_args().runs)))
