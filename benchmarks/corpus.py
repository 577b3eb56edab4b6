"""Corpus sweep: gradguard on the frameworks' own operators, beside their own checkers.

    python benchmarks/corpus.py                                  # everything (long)
    python benchmarks/corpus.py --suite opinfo --config f64-rev  # one column
    python benchmarks/corpus.py --suite opinfo --only sin,linalg.svd --samples 1

Every derivative in these corpora is the framework's own, and (but for the
few in ``ALLOWLIST``) right: each case where gradguard does not say ``pass``
while the framework's checker does is a false alarm to explain.

- ``opinfo``: every op of PyTorch's OpInfo database
  (``torch.testing._internal.common_methods_invocations.op_db``) with
  ``supports_autograd``, up to ``--samples`` samples each, built as torch's
  own ``TestGradients._check_helper`` builds them (``op.gradcheck_wrapper``,
  ``sample.output_process_fn_grad``; the differentiated inputs are the
  tensors of the sample that require grad). Configurations ``f64-rev``,
  ``f32-rev`` (reverse mode) and ``f64-fwd`` (forward mode, ops with
  ``supports_forward_ad``). Peer: ``torch.autograd.gradcheck`` with default
  options (in float32 too: that is what a user gets); forward mode with
  ``check_forward_ad=True, check_backward_ad=False``.
- ``jax``: the float records of ``lax_test_util.lax_ops()`` plus a list of
  ``jax.numpy`` / ``jax.lax`` functions, with x64 (``x64``: float64) and,
  in another process, without (``x32``: float32). Peer:
  ``jax.test_util.check_grads(f, args, order=1, modes=["rev"])``.
- ``tf``: about 120 ops of tf.math / tf.nn / tf.linalg / tf.signal /
  tf.image in float64 (``f64``) and float32 (``f32``). Peer:
  ``tf.test.compute_gradient``, passing when
  ``max |theoretical - numerical| <= tol * max(1, max |theoretical|)`` with
  tol 1e-6 in float64 and 1e-3 in float32.

gradguard runs as ``gradguard.check(f, *inputs, direction=...)`` with default
options, imported from whatever ``PYTHONPATH`` says (so one copy of this
script measures any checkout). Inputs are seeded per op (crc32 of its name).

Each (suite, configuration) runs in its own worker process, one intra-op
thread; the worker logs each case before running it, so a crash (a
segfault too) or a case over ``--case-timeout`` is recorded as such and the
worker restarts after it. Writes ``corpus.json`` (every case),
``corpus.md`` (the tables) and ``cases.jsonl`` per column under
``--out`` (default ``out/corpus``; ``out/`` is ignored by git).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
import traceback
import warnings
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

#: Derivatives that are genuinely wrong in the framework: (suite, op) ->
#: evidence. Only entries verified here (the peer fails it too, or the bug
#: was reproduced by hand). A gradguard ``fail`` on these is right.
ALLOWLIST: dict[tuple[str, str], str] = {}

#: The columns of each suite: name -> (dtype, direction).
CONFIGS: dict[str, dict[str, tuple[str, str]]] = {
    "opinfo": {
        "f64-rev": ("float64", "rev"),
        "f32-rev": ("float32", "rev"),
        "f64-fwd": ("float64", "fwd"),
    },
    "jax": {"x64": ("float64", "rev"), "x32": ("float32", "rev")},
    "tf": {"f64": ("float64", "rev"), "f32": ("float32", "rev")},
}
PEERS = {
    "opinfo": "torch.autograd.gradcheck",
    "jax": "jax.test_util.check_grads",
    "tf": "tf.test.compute_gradient",
}
TF_TOLERANCE = {"float64": 1e-6, "float32": 1e-3}
MESSAGE_CHARS = 300


def op_seed(name: str) -> int:
    return zlib.crc32(name.encode())


def first_line(text: str) -> str:
    line = str(text).strip().splitlines()[0] if str(text).strip() else ""
    return line[:MESSAGE_CHARS]


def exception_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {first_line(str(exc))}"


# --- gradguard's side -------------------------------------------------------


def run_gradguard(f: Callable[..., Any], inputs: tuple[Any, ...], direction: str) -> dict:
    """``gradguard.check`` with default options, summarised; never raises."""
    import gradguard

    start = time.perf_counter()
    try:
        report = gradguard.check(f, *inputs, direction=direction)
    except Exception as exc:
        return {
            "gg": "error",
            "gg_error": exception_text(exc),
            "gg_time": time.perf_counter() - start,
        }
    seconds = time.perf_counter() - start
    ratios = [m.ratio for m in report.worst]
    why = (report.diagnosis or report.reasons or ("",))[0]
    return {
        "gg": report.verdict,
        "gg_time": seconds,
        "gg_relative_error": report.relative_error,
        "gg_worst_ratio": max(ratios) if ratios else 0.0,
        "gg_checked": report.checked,
        "gg_wrong": report.wrong,
        "gg_uncertain": report.uncertain,
        "gg_why": first_line(why),
        "gg_note": first_line(report.notes[0]) if report.notes else "",
    }


def timed_peer(run: Callable[[], bool | str]) -> dict:
    """A peer's verdict: ``pass``, ``fail`` (its own error) or ``error``."""
    start = time.perf_counter()
    try:
        outcome = run()
    except AssertionError as exc:
        return {"peer": "fail", "peer_error": exception_text(exc), "peer_time": _since(start)}
    except Exception as exc:
        verdict = "fail" if type(exc).__name__ == "GradcheckError" else "error"
        return {"peer": verdict, "peer_error": exception_text(exc), "peer_time": _since(start)}
    if outcome is True:
        return {"peer": "pass", "peer_time": _since(start)}
    message = str(outcome or "")[:MESSAGE_CHARS]
    return {"peer": "fail", "peer_error": message, "peer_time": _since(start)}


def _since(start: float) -> float:
    return time.perf_counter() - start


# --- OpInfo -----------------------------------------------------------------


def opinfo_name(op: Any) -> str:
    return f"{op.name}.{op.variant_test_name}" if op.variant_test_name else op.name


def opinfo_ops(dtype_name: str, direction: str, only: set[str] | None = None) -> list[Any]:
    """The OpInfo ops with autograd for this dtype (and forward AD for ``fwd``)."""
    import torch
    from torch.testing._internal.common_methods_invocations import op_db

    dtype = getattr(torch, dtype_name)
    ops = []
    for op in op_db:
        if not op.supports_autograd or dtype not in op.supported_backward_dtypes("cpu"):
            continue
        if direction == "fwd" and not op.supports_forward_ad:
            continue
        if only and opinfo_name(op) not in only and op.name not in only:
            continue
        ops.append(op)
    return ops


def opinfo_samples(op: Any, dtype_name: str, samples: int) -> list[Any]:
    """The first ``samples`` samples of ``op``, seeded by its name."""
    import torch

    torch.manual_seed(op_seed(opinfo_name(op)))
    found = []
    for sample in op.sample_inputs("cpu", getattr(torch, dtype_name), requires_grad=True):
        found.append(sample)
        if len(found) == samples:
            break
    return found


def opinfo_function(op: Any, sample: Any) -> tuple[Callable[..., Any], tuple[Any, ...]]:
    """f and its differentiated inputs, as torch's ``TestGradients._check_helper``."""
    import torch
    from torch.testing._internal.common_utils import is_iterable_of_tensors

    def requires_grad(x: Any) -> bool:
        return isinstance(x, torch.Tensor) and x.requires_grad

    if is_iterable_of_tensors(sample.input):
        leaves = [*sample.input, *sample.args, *sample.kwargs.values()]
    else:
        leaves = [sample.input, *sample.args, *sample.kwargs.values()]
    inputs = tuple(x for x in leaves if requires_grad(x))
    variant = op.get_op()

    def recompose(values: tuple[Any, ...], leaf: Any, at: int) -> tuple[Any, int]:
        if is_iterable_of_tensors(leaf):
            rebuilt = []
            for x in leaf:
                if requires_grad(x):
                    rebuilt.append(values[at])
                    at += 1
                else:
                    rebuilt.append(x)
            return rebuilt, at
        if requires_grad(leaf):
            return values[at], at + 1
        return leaf, at

    def f(*values: Any) -> Any:
        positional = []
        at = 0
        value, at = recompose(values, sample.input, at)
        positional.append(value)
        for leaf in sample.args:
            value, at = recompose(values, leaf, at)
            positional.append(value)
        kwargs = {}
        for key, leaf in sample.kwargs.items():
            kwargs[key], at = recompose(values, leaf, at)
        output = op.gradcheck_wrapper(variant, *positional, **kwargs)
        if sample.output_process_fn_grad is not None:
            return sample.output_process_fn_grad(output)
        return output

    return f, inputs


def opinfo_cases(
    config: str, samples: int, only: set[str] | None = None
) -> Iterator[tuple[str, int, Callable[..., Any] | None, tuple[Any, ...], str]]:
    """``(op name, sample index, f, inputs, problem)`` of one configuration;
    ``f`` is None (and ``problem`` says why) where no case can be built."""
    dtype_name, direction = CONFIGS["opinfo"][config]
    for op in opinfo_ops(dtype_name, direction, only):
        name = opinfo_name(op)
        try:
            found = opinfo_samples(op, dtype_name, samples)
        except Exception as exc:
            yield name, 0, None, (), f"sample_inputs raised {exception_text(exc)}"
            continue
        for index, sample in enumerate(found):
            try:
                f, inputs = opinfo_function(op, sample)
            except Exception as exc:
                yield name, index, None, (), f"building f raised {exception_text(exc)}"
                continue
            if not inputs:
                yield name, index, None, (), "no input requires grad"
                continue
            yield name, index, f, inputs, ""


def torch_outputs_info(f: Callable[..., Any], inputs: tuple[Any, ...]) -> dict:
    """What f returns, for sorting false alarms into families: dtypes, which
    float outputs do not require grad, and whether the VJP hands back the
    incoming gradient's own memory (an aliased result)."""
    import torch

    info: dict[str, Any] = {}
    try:
        with torch.enable_grad():
            out = f(*inputs)
        outs = [out] if isinstance(out, torch.Tensor) else list(_torch_leaves(out))
        info["out_dtypes"] = sorted({str(o.dtype).replace("torch.", "") for o in outs})
        info["nondiff_outputs"] = sum(1 for o in outs if not o.requires_grad)
        diff = [o for o in outs if o.requires_grad]
        if diff:
            cotangents = [torch.randn_like(o) for o in diff]
            grads = torch.autograd.grad(diff, inputs, cotangents, allow_unused=True)
            given = {c.untyped_storage().data_ptr() for c in cotangents}
            info["aliased_vjp"] = any(
                g is not None and g.untyped_storage().data_ptr() in given for g in grads
            )
    except Exception as exc:
        info["probe_error"] = exception_text(exc)
    return info


def _torch_leaves(value: Any) -> Iterator[Any]:
    import torch

    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _torch_leaves(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _torch_leaves(item)


def run_opinfo_case(f: Callable[..., Any], inputs: tuple[Any, ...], config: str) -> dict:
    import torch

    _dtype_name, direction = CONFIGS["opinfo"][config]
    result = run_gradguard(f, inputs, direction)
    if direction == "fwd":
        options = {"check_forward_ad": True, "check_backward_ad": False}
    else:
        options = {}
    result.update(timed_peer(lambda: torch.autograd.gradcheck(f, inputs, **options)))
    if result["gg"] != "pass":
        result.update(torch_outputs_info(f, inputs))
    result["input_dtypes"] = sorted({str(x.dtype).replace("torch.", "") for x in inputs})
    result["input_layout"] = sorted(
        {"contiguous" if x.is_contiguous() else "strided" for x in inputs}
    )
    return result


def opinfo_worker(config: str, samples: int, only: set[str] | None, log: Path) -> None:
    import torch

    torch.set_num_threads(1)
    done = started_keys(log)
    for name, index, f, inputs, problem in opinfo_cases(config, samples, only):
        key = f"{name}#{index}"
        if key in done:
            continue
        write_event(log, {"event": "start", "key": key})
        case = {"event": "case", "key": key, "op": name, "sample": index}
        if f is None:
            case.update({"gg": "skipped", "peer": "skipped", "skip": problem})
        else:
            case.update(guarded(lambda f=f, inputs=inputs: run_opinfo_case(f, inputs, config)))
        write_event(log, case)


def guarded(run: Callable[[], dict]) -> dict:
    """A case's own Python exception (outside both checkers) is a result too."""
    try:
        return run()
    except Exception as exc:
        return {"gg": "error", "peer": "error", "harness_error": exception_text(exc)}


# --- worker bookkeeping -------------------------------------------------------


def write_event(log: Path, event: dict) -> None:
    with log.open("a") as stream:
        stream.write(json.dumps(event, default=str) + "\n")
        stream.flush()
        os.fsync(stream.fileno())


def read_events(log: Path) -> list[dict]:
    if not log.exists():
        return []
    events = []
    for line in log.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by a crash
    return events


def started_keys(log: Path) -> set[str]:
    return {e["key"] for e in read_events(log) if e.get("event") in ("start", "case")}


def unfinished_key(log: Path) -> str | None:
    """The case a dead worker was running: started, with no result."""
    finished = {e["key"] for e in read_events(log) if e.get("event") == "case"}
    started = [e["key"] for e in read_events(log) if e.get("event") == "start"]
    pending = [k for k in started if k not in finished]
    return pending[-1] if pending else None


def worker_environment() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        OPENBLAS_NUM_THREADS="1",
        TF_NUM_INTRAOP_THREADS="1",
        TF_NUM_INTEROP_THREADS="1",
        TF_CPP_MIN_LOG_LEVEL="3",
        XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
    )
    return env


def supervise(suite: str, config: str, args: argparse.Namespace, log: Path) -> float:
    """Run one column's worker until every case is logged; restart it after a
    crash or a case over the time limit, recording that case. Wall seconds."""
    start = time.perf_counter()
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", f"{suite}:{config}"]
    command += ["--samples", str(args.samples), "--log", str(log)]
    if args.only:
        command += ["--only", args.only]
    for _attempt in range(1000):
        process = subprocess.Popen(command, env=worker_environment(), start_new_session=True)
        rc = wait_watching(process, log, args.case_timeout)
        if rc == 0:
            break
        key = unfinished_key(log)
        if key is None:
            print(f"{suite}:{config}: worker exited with {rc} outside a case", file=sys.stderr)
            break
        outcome = "timeout" if rc == "timeout" else "crash"
        name, _, index = key.rpartition("#")
        write_event(
            log,
            {
                "event": "case",
                "key": key,
                "op": name,
                "sample": int(index),
                "gg": outcome,
                "peer": outcome,
                "harness_error": f"worker {outcome} (exit {rc})",
            },
        )
        print(f"{suite}:{config}: {key}: {outcome} (exit {rc}); restarting", file=sys.stderr)
    return time.perf_counter() - start


def wait_watching(process: subprocess.Popen, log: Path, case_timeout: float) -> int | str:
    """The worker's exit code, or ``"timeout"`` after killing it when one
    case has run longer than ``case_timeout`` seconds."""
    last_size, last_change = -1, time.monotonic()
    while True:
        try:
            return process.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            pass
        size = log.stat().st_size if log.exists() else 0
        if size != last_size:
            last_size, last_change = size, time.monotonic()
        elif time.monotonic() - last_change > case_timeout and unfinished_key(log):
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return "timeout"


# --- tables -------------------------------------------------------------------

VERDICT_ROWS = ("pass", "fail", "inconclusive", "error", "crash", "timeout")
PEER_COLUMNS = ("pass", "fail", "error", "crash", "timeout")


def cross_table(cases: list[dict]) -> list[str]:
    counts = Counter((c["gg"], c["peer"]) for c in cases)
    columns = [p for p in PEER_COLUMNS if any(k[1] == p for k in counts)] or ["pass"]
    rows = [v for v in VERDICT_ROWS if any(k[0] == v for k in counts)]
    lines = ["| gradguard \\ peer | " + " | ".join(columns) + " | total |"]
    lines.append("|---" * (len(columns) + 2) + "|")
    for row in rows:
        cells = [str(counts.get((row, col), 0)) for col in columns]
        total = sum(counts[k] for k in counts if k[0] == row)
        lines.append(f"| {row} | " + " | ".join(cells) + f" | {total} |")
    totals = [str(sum(counts[k] for k in counts if k[1] == col)) for col in columns]
    lines.append("| total | " + " | ".join(totals) + f" | {sum(counts.values())} |")
    return lines


def time_line(cases: list[dict]) -> str:
    def summary(key: str) -> str:
        values = [c[key] for c in cases if isinstance(c.get(key), (int, float))]
        if not values:
            return "n/a"
        return f"median {statistics.median(values) * 1e3:.1f} ms, total {sum(values):.1f} s"

    return f"gradguard: {summary('gg_time')}; peer: {summary('peer_time')}"


def false_alarms(suite: str, cases: list[dict]) -> list[dict]:
    """Cases where gradguard does not pass while the peer does."""
    return [c for c in cases if c["peer"] == "pass" and c["gg"] != "pass"]


def allowlisted(suite: str, case: dict) -> str:
    return ALLOWLIST.get((suite, case["op"]), "")


def case_message(case: dict) -> str:
    if case["gg"] in ("error", "crash", "timeout"):
        return case.get("gg_error") or case.get("harness_error", "")
    return case.get("gg_why", "")


def family(suite: str, config: str, case: dict) -> str:
    """The apparent family of a false alarm, from what was recorded."""
    message = case_message(case).lower()
    if case["gg"] in ("error", "crash", "timeout"):
        return "exceptions"
    if case.get("aliased_vjp"):
        return "aliasing"
    if case.get("nondiff_outputs"):
        return "non-differentiable outputs"
    dtype, direction = CONFIGS[suite][config]
    if dtype == "float64" and set(case.get("out_dtypes", [])) - {"float64", "complex128"}:
        return "lower-precision outputs"
    if "determinis" in message:
        return "layout / nondeterminism"
    if direction == "fwd":
        return "forward mode"
    if dtype != "float64":
        return "low precision"
    if case.get("gg_relative_error", 1.0) <= 1e-6:
        return "deep rounding"
    return "other"


def format_number(value: Any) -> str:
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.2g}"
    return str(value) if value is not None else ""


def markdown(results: dict) -> tuple[str, str]:
    """The tables, and the false-alarm cases grouped by family."""
    tables = [f"# Corpus sweep\n\n{results['environment']}\n"]
    title = "# Corpus sweep: gradguard does not pass, the peer does"
    cases_md = [f"{title}\n\n{results['environment']}\n"]
    for column, data in results["columns"].items():
        suite, config = column.split(":")
        cases = [c for c in data["cases"] if c["gg"] != "skipped"]
        skipped = len(data["cases"]) - len(cases)
        alarms = false_alarms(suite, cases)
        real = [c for c in alarms if not allowlisted(suite, c)]
        ops = len({c["op"] for c in cases})
        tables.append(f"## {suite} {config} (peer: {PEERS[suite]})\n")
        tables.append(
            f"{len(cases)} cases from {ops} ops ({skipped} samples skipped); "
            f"{data['seconds']:.0f} s wall for the column.\n"
        )
        tables.extend(cross_table(cases))
        tables.append("")
        accepted = [c for c in cases if c["peer"] == "pass"]
        verdicts = Counter(c["gg"] for c in real)
        tables.append(
            f"Of {len(accepted)} cases the peer passes, gradguard: "
            f"{verdicts.get('fail', 0)} fail, {verdicts.get('inconclusive', 0)} inconclusive, "
            f"{sum(verdicts[k] for k in ('error', 'crash', 'timeout'))} error/crash/timeout"
            f" (allowlisted left out: {len(alarms) - len(real)}).\n"
        )
        tables.append(f"Times per case: {time_line(cases)}.\n")
        by_family: dict[str, list[dict]] = defaultdict(list)
        for case in alarms:
            by_family[family(suite, config, case)].append(case)
        tables.append(
            "False alarms by apparent family: "
            + (", ".join(f"{k} {len(v)}" for k, v in sorted(by_family.items())) or "none")
            + "\n"
        )
        cases_md.append(f"## {suite} {config}: {len(alarms)} cases\n")
        for name in sorted(by_family):
            cases_md.append(f"### {name} ({len(by_family[name])})\n")
            cases_md.append("| op | sample | gradguard | rel. error | worst ratio | first line |")
            cases_md.append("|---|---|---|---|---|---|")
            for case in by_family[name]:
                note = " (allowlisted)" if allowlisted(suite, case) else ""
                message = case_message(case).replace("|", "\\|")
                cases_md.append(
                    f"| {case['op']}{note} | {case['sample']} | {case['gg']} | "
                    f"{format_number(case.get('gg_relative_error'))} | "
                    f"{format_number(case.get('gg_worst_ratio'))} | {message} |"
                )
            cases_md.append("")
    return "\n".join(tables), "\n".join(cases_md)


def environment() -> str:
    versions = []
    for module in ("gradguard", "numpy", "torch", "jax", "tensorflow"):
        try:
            found = __import__(module)
            versions.append(f"{module} {getattr(found, '__version__', '?')}")
        except Exception:
            versions.append(f"{module} (not installed)")
    import gradguard

    commit = subprocess.run(
        ["git", "-C", str(Path(gradguard.__file__).parent), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return (
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; gradguard from "
        f"{Path(gradguard.__file__).parent} (commit {commit or '?'}); "
        f"{', '.join(versions)}; Python {platform.python_version()}; one intra-op thread."
    )


# --- command line ---------------------------------------------------------------


WORKERS = {"opinfo": opinfo_worker}


def run_worker(spec: str, args: argparse.Namespace) -> None:
    warnings.simplefilter("ignore")
    suite, config = spec.split(":")
    only = set(args.only.split(",")) if args.only else None
    try:
        WORKERS[suite](config, args.samples, only, Path(args.log))
    except Exception:
        traceback.print_exc()
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", default="all", help="opinfo, jax, tf or all")
    parser.add_argument("--config", default="", help="e.g. f64-rev,f32-rev,f64-fwd,x64,x32,f64,f32")
    parser.add_argument("--only", default="", help="comma-separated op names")
    parser.add_argument("--samples", type=int, default=2, help="samples per OpInfo op")
    parser.add_argument("--out", default=str(ROOT / "out" / "corpus"))
    parser.add_argument("--case-timeout", type=float, default=600.0)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--log", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        run_worker(args.worker, args)
        return 0
    suites = list(CONFIGS) if args.suite == "all" else args.suite.split(",")
    wanted = set(args.config.split(",")) if args.config else None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"environment": environment(), "columns": {}}
    for suite in suites:
        if suite not in WORKERS:
            print(f"{suite}: no such suite here", file=sys.stderr)
            continue
        for config in CONFIGS[suite]:
            if wanted and config not in wanted:
                continue
            log = out / f"{suite}-{config}.jsonl"
            log.unlink(missing_ok=True)
            seconds = supervise(suite, config, args, log)
            cases = [e for e in read_events(log) if e.get("event") == "case"]
            results["columns"][f"{suite}:{config}"] = {"seconds": seconds, "cases": cases}
            print(f"{suite}:{config}: {len(cases)} cases in {seconds:.0f} s", file=sys.stderr)
    tables, alarms = markdown(results)
    (out / "corpus.json").write_text(json.dumps(results, indent=1, default=str))
    (out / "corpus.md").write_text(tables + "\n")
    (out / "cases.md").write_text(alarms + "\n")
    print(tables)
    print(f"\nWritten to {out}/corpus.md, cases.md and corpus.json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
