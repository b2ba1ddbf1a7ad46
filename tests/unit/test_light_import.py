"""The API function's cold start: ``import app`` loads neither numpy nor the statistics. Its cost against the bare
import of its libraries (target: at most 1.2x) is measured by benchmarks/import_time.py, not here: a timed test on a
shared 2-core machine measures the neighbours."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_app_does_not_import_numpy_or_the_statistics() -> None:
    code = (
        "import json, sys; import app; "
        "print(json.dumps(sorted(m for m in sys.modules if m == 'numpy' or m.startswith('numpy.') "
        "or m in ('chalicelib.domain.estimation', 'chalicelib.domain.sampling', 'chalicelib.domain.risk', "
        "'chalicelib.services.rounds', 'chalicelib.tasks'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_the_tasks_still_load_the_statistics_when_called() -> None:
    code = "import sys, app; app.tasks.TASKS; print('numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
