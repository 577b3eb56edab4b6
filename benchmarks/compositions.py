"""Random compositions of ordinary operations: does gradguard ever say ``fail``?

    python benchmarks/compositions.py                    # 1000 seeds, torch, float64 and float32
    python benchmarks/compositions.py --seeds 200 --frameworks torch jax

Each seed is a chain of smooth operations (``tests/compositions.py``) whose
derivative comes from the framework's autodiff, right by construction; the
check runs with default options. Every ``fail`` is a bug of gradguard's and
is listed with its seed; ``inconclusive`` is counted (and its reasons
tallied). Float32 inputs are checked as float32 arguments of a function
that also accepts float64 (the numerical side in float64).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from compositions import composition


def run(framework: str, dtype: str, seeds: range) -> tuple[Counter, list[str], Counter]:
    import gradguard

    if framework == "jax":
        import jax

        jax.config.update("jax_enable_x64", True)
    verdicts: Counter = Counter()
    failures: list[str] = []
    reasons: Counter = Counter()
    for seed in seeds:
        description, f, args = composition(seed, framework, dtype)
        report = gradguard.check(f, *args, seed=seed)
        verdicts[report.verdict] += 1
        if report.verdict == "fail":
            worst = report.worst[0] if report.worst else None
            failures.append(f"seed {seed}: {description}\n    {worst}")
        elif report.verdict == "inconclusive":
            for reason in report.reasons:
                reasons[reason.split(" compared value(s) ")[-1][:60]] += 1
    return verdicts, failures, reasons


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=1000)
    parser.add_argument("--frameworks", nargs="+", default=["torch"])
    parser.add_argument("--dtypes", nargs="+", default=["float64", "float32"])
    options = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    total_fail = 0
    print("| framework | dtype | seeds | pass | inconclusive | fail | time (s) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    details = []
    for framework in options.frameworks:
        for dtype in options.dtypes:
            began = time.perf_counter()
            verdicts, failures, reasons = run(framework, dtype, range(options.seeds))
            seconds = time.perf_counter() - began
            total_fail += verdicts["fail"]
            print(
                f"| {framework} | {dtype} | {options.seeds} | {verdicts['pass']} | "
                f"{verdicts['inconclusive']} | {verdicts['fail']} | {seconds:.1f} |"
            )
            details.append((framework, dtype, failures, reasons))
    for framework, dtype, failures, reasons in details:
        for failure in failures:
            print(f"\nFAIL ({framework} {dtype}) {failure}")
        for reason, count in reasons.most_common():
            print(f"inconclusive ({framework} {dtype}), {count}x: ...{reason}")
    return 1 if total_fail else 0


if __name__ == "__main__":
    sys.exit(main())
