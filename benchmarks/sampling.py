"""Benchmark: risk-weighted design + Poisson draw for a large seller frame.

Usage: ``python benchmarks/sampling.py [--sellers N] [--expected-sample K] [--repeats R] [--baseline-repeats B]``
(defaults: 10,000,000 sellers, K = N / 100, 5 and 5 repeats). Prints one JSON line::

    {"sellers": N, "expected_sample": K, "seconds": S, "baseline_seconds": B, "ratio": R, "peak_mb": M,
     "input_mb": I, "load": L, "cpu_seconds": CS, "baseline_cpu_seconds": CB, "cpu_ratio": CR}

* ``seconds``: median wall time of ``design(risk, cost, budget)`` followed by ``poisson_draw(pi, seed)``.
* ``baseline_seconds``: median wall time of numpy's ``Generator.choice(N, size=K, p=pi/sum(pi), replace=False)``
  on the same inclusion probabilities (``p`` normalised outside the timed region).
  The timed runs of the two alternate (ours, numpy's, ours, ...), so that a change of machine load during the
  run affects both alike.
* ``peak_mb``: ``ru_maxrss`` (the process's peak resident set, MiB) measured right after an untimed design+draw,
  *minus* the process's peak RSS just before the input arrays were allocated (interpreter + numpy + our modules).
  It therefore includes the input arrays themselves plus every temporary of design + draw; the baseline runs
  afterwards so its own memory use cannot inflate the figure. Inputs are generated in place, so generating them
  adds nothing beyond their own size.
* ``ratio``: ``baseline_seconds / seconds`` (how many times faster than numpy's weighted ``choice``, same run).
* ``input_mb``: ``risk`` (float64) + ``cost`` (int64) bytes, MiB.
* ``load``: the 1-minute load average when the run ended (the timings are wall-clock: on a loaded machine both
  figures grow and the ratio wobbles).
* ``cpu_seconds``, ``baseline_cpu_seconds``, ``cpu_ratio``: the same medians in process CPU time (one thread, so
  the time on one core), which a loaded machine disturbs much less; on an idle machine they match the wall
  figures.

BLAS is pinned to one thread (the target is one core).
Targets (issue 9): ``seconds <= 0.25``, ``ratio >= 3``, ``peak_mb <= 2 * input_mb``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

# one core: keep BLAS (used by numpy.dot) single-threaded, for this run and the baseline alike
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chalicelib.domain.sampling import design, poisson_draw  # noqa: E402


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sellers", type=int, default=10_000_000)
    parser.add_argument("--expected-sample", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baseline-repeats", type=int, default=5)
    args = parser.parse_args(argv)
    n = args.sellers
    k_target = args.expected_sample or max(1, n // 100)

    rss_before = _peak_rss_mb()
    rng = np.random.default_rng(2016)
    # risk: logistic(z - 4), z ~ N(0, 1) -- mean about 3%, computed in place (no temporaries)
    risk = rng.standard_normal(n)
    risk -= 4.0
    np.negative(risk, out=risk)
    np.exp(risk, out=risk)
    risk += 1.0
    np.reciprocal(risk, out=risk)
    cost = rng.integers(500, 50_000, n, dtype=np.int64)  # expected order cost, minor units
    input_mb = (risk.nbytes + cost.nbytes) / 2**20

    # calibrate the budget so the design's expected sample size is about k_target (untimed)
    budget = int(k_target * float(cost.mean()))
    size = design(risk, cost, budget).expected_size
    budget = int(budget * k_target / size)

    def ours(seed: int) -> tuple[float, float]:
        t0, c0 = time.perf_counter(), time.process_time()
        d = design(risk, cost, budget)
        sample = poisson_draw(d.pi, seed=seed)
        elapsed = time.perf_counter() - t0, time.process_time() - c0
        assert abs(sample.shape[0] - d.expected_size) < 10 * np.sqrt(d.expected_size) + 10
        return elapsed

    ours(10_000)  # untimed: its footprint is the peak measured next (every run allocates the same)
    peak_mb = _peak_rss_mb() - rss_before

    d = design(risk, cost, budget)
    expected = d.expected_size
    p = d.pi / d.pi.sum()
    k = round(d.expected_size)
    del d
    times: list[float] = []
    cpu: list[float] = []
    base_times: list[float] = []
    base_cpu: list[float] = []
    for rep in range(max(args.repeats, args.baseline_repeats)):
        if rep < args.repeats:
            wall, used = ours(rep)
            times.append(wall)
            cpu.append(used)
        if rep < args.baseline_repeats:
            choice_rng = np.random.default_rng(rep)
            t0, c0 = time.perf_counter(), time.process_time()
            choice_rng.choice(n, size=k, p=p, replace=False)
            base_times.append(time.perf_counter() - t0)
            base_cpu.append(time.process_time() - c0)

    print(
        json.dumps(
            {
                "sellers": n,
                "expected_sample": round(expected, 1),
                "seconds": round(statistics.median(times), 4),
                "baseline_seconds": round(statistics.median(base_times), 4),
                "ratio": round(statistics.median(base_times) / statistics.median(times), 2),
                "peak_mb": round(peak_mb, 1),
                "input_mb": round(input_mb, 1),
                "load": round(os.getloadavg()[0], 2),
                "cpu_seconds": round(statistics.median(cpu), 4),
                "baseline_cpu_seconds": round(statistics.median(base_cpu), 4),
                "cpu_ratio": round(statistics.median(base_cpu) / statistics.median(cpu), 2),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
