"""Test, lint and type-check sessions.

``python -m nox`` runs what CI runs (``nox.options.sessions``);
``python -m nox -s tests -- -k seed`` passes arguments on to pytest.
"""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_venv = "yes"
nox.options.error_on_missing_interpreters = True
# Quick checks first, the full test run last so its summary closes the log.
nox.options.sessions = ["lint", "typecheck", "minimal", "tests"]

CONSTRAINTS = ("-c", "constraints/test.txt")
LINTED = ("src", "tests", "benchmarks", "noxfile.py")
FRAMEWORKS = ("torch", "jax", "tensorflow")


@nox.session
def tests(session: nox.Session) -> None:
    """Every test, with every framework installed."""
    # tensorflow-cpu rather than the tensorflow extra: the same TensorFlow
    # without the GPU runtime, a much smaller download for CI.
    session.install(*CONSTRAINTS, "-e", ".[test,torch,jax,dask,plot]", "tensorflow-cpu")
    session.run("pytest", *session.posargs)


@nox.session
def minimal(session: nox.Session) -> None:
    """The tests with NumPy and array_api_strict only: framework tests must skip."""
    session.install(*CONSTRAINTS, "-e", ".[test]")
    # A reused environment could still hold a framework from elsewhere.
    session.run(
        "python",
        "-c",
        "import importlib.util, sys; "
        f"found = [m for m in {FRAMEWORKS!r} if importlib.util.find_spec(m)]; "
        "sys.exit(f'frameworks installed in the minimal session: {found}' if found else 0)",
    )
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check, ruff format --check, and the import contracts (pyproject.toml)."""
    # import-linter reads the package's imports, so the package is installed too.
    session.install(*CONSTRAINTS, "ruff", "import-linter", "-e", ".")
    # benchmarks/ may not exist yet; ruff fails on a missing path.
    paths = [p for p in LINTED if Path(p).exists()]
    session.run("ruff", "check", *paths)
    session.run("ruff", "format", "--check", *paths)
    session.run("lint-imports")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy on the package."""
    session.install(*CONSTRAINTS, "mypy", "-e", ".")
    session.run("mypy", "src/gradguard")


#: benchmarks/small.py's part of the bench session: the small-function goals and
#: TensorFlow's tanh(X @ W) at n = 3000.
SMALL_BENCH = ("--frameworks", "torch,jax,tensorflow", "--matmul", "--rounds", "2")


@nox.session
def bench(session: nox.Session) -> None:
    """Speed and memory beside the frameworks' own gradient checks (not run by default).

    benchmarks/run.py (gradguard beside torch.autograd.gradcheck,
    jax.test_util.check_grads, tf.test.compute_gradient, scipy.optimize.check_grad
    and the floors), then benchmarks/small.py (small checks, as a test suite makes
    them): every goal of benchmarks/README.md in one run.
    ``python -m nox -s bench -- --sizes 10,1000`` passes options on to run.py;
    ``--no-small`` among them leaves small.py out."""
    session.install(*CONSTRAINTS, "-e", ".[torch,jax,tensorflow]", "scipy")
    options = [a for a in session.posargs if a != "--no-small"]
    session.run("python", "benchmarks/run.py", *options)
    if "--no-small" not in session.posargs:
        session.run("python", "benchmarks/small.py", *SMALL_BENCH)


@nox.session
def corpus(session: nox.Session) -> None:
    """False alarms on the frameworks' own operators (long; not run by default).

    gradguard on PyTorch OpInfo, JAX lax and TensorFlow operators beside gradcheck /
    check_grads / compute_gradient (benchmarks/README.md);
    ``python -m nox -s corpus -- --suite opinfo --config f64-rev`` passes options on."""
    session.install(*CONSTRAINTS, "-e", ".[test,torch,jax]", "tensorflow-cpu")
    session.run("python", "benchmarks/corpus.py", *session.posargs)
