"""``progress=``: a bar on stderr for a check that runs longer than about a
second and only when stderr is a terminal (or ``progress=True``); quiet
otherwise and with ``progress=False``."""

from __future__ import annotations

import io
import os
import select
import sys
import time

import numpy as np
import pytest

import gradguard
from gradguard.engine import progress as _progress
from gradguard.engine.progress import Progress
from gradguard.engine.strategies import colouring as _colouring_module


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_no_bar_before_the_delay():
    clock, stream = Clock(), Tty()
    bar = Progress(None, stream=stream, clock=clock)
    clock.now = 0.5
    bar.update(10, 100)
    bar.update(100, 100)
    bar.close()
    assert stream.getvalue() == ""


def test_bar_after_the_delay_ends_with_a_newline():
    clock, stream = Clock(), Tty()
    bar = Progress(None, stream=stream, clock=clock)
    clock.now = 1.5
    bar.update(25, 100)
    clock.now = 2.0
    bar.update(100, 100)
    bar.close()
    text = stream.getvalue()
    assert text.startswith("\rgradguard: [")
    assert " 25% 25/100 evaluations and VJPs, 1.5 s" in text
    assert text.endswith(" 100% 100/100 evaluations and VJPs, 2.0 s\n")
    assert text.count("\n") == 1


def test_unfinished_bar_is_erased():
    clock, stream = Clock(), Tty()
    bar = Progress(None, stream=stream, clock=clock)
    clock.now = 3.0
    bar.update(5, 100)
    bar.close()
    line = stream.getvalue().split("\r")[1]
    assert stream.getvalue().endswith("\r" + " " * len(line) + "\r")
    assert "\n" not in stream.getvalue()


def test_redraws_are_throttled():
    clock, stream = Clock(), Tty()
    bar = Progress(None, stream=stream, clock=clock)
    clock.now = 2.0
    for count in range(1, 50):
        bar.update(count, 100)
    assert stream.getvalue().count("\r") == 1


def test_quiet_when_not_a_terminal_unless_asked():
    clock = Clock()
    plain = io.StringIO()
    bar = Progress(None, stream=plain, clock=clock)
    clock.now = 5.0
    bar.update(50, 100)
    bar.update(100, 100)
    assert plain.getvalue() == ""
    forced = io.StringIO()
    bar = Progress(True, stream=forced, clock=clock)
    clock.now = 7.0
    bar.update(100, 100)
    assert forced.getvalue().endswith("100/100 evaluations and VJPs, 2.0 s\n")


def test_quiet_when_turned_off():
    clock, stream = Clock(), Tty()
    bar = Progress(False, stream=stream, clock=clock)
    clock.now = 5.0
    bar.update(50, 100)
    bar.update(100, 100)
    bar.close()
    assert stream.getvalue() == ""


def test_a_closed_stream_is_no_error():
    clock, stream = Clock(), Tty()
    bar = Progress(True, stream=stream, clock=clock)
    stream.close()
    clock.now = 5.0
    bar.update(50, 100)
    bar.close()


# -- through gradguard.check -----------------------------------------------------


def slow_f(x):
    time.sleep(0.002)
    return np.sin(x) * x


def slow_vjp(cotangent, x):
    return cotangent * (np.cos(x) * x + np.sin(x))


@pytest.fixture
def quick(monkeypatch):
    """A bar after 0.05 s instead of a second."""
    monkeypatch.setattr(_progress, "PROGRESS_DELAY", 0.05)


def _check(progress):
    x = np.linspace(-1.0, 1.0, 30)
    return gradguard.check(slow_f, x, vjp=slow_vjp, mode="full", progress=progress)


def _read_line(reader, timeout=5.0):
    """What the terminal got, up to the bar's final newline: the kernel hands
    pty output to the reader asynchronously, so one read may get only part."""
    text, deadline = "", time.monotonic() + timeout
    while not text.endswith("\n") and time.monotonic() < deadline:
        ready, _, _ = select.select([reader], [], [], 0.1)
        if ready:
            text += reader.read(65536).decode()
    return text


def test_check_draws_a_bar_on_a_terminal(quick, monkeypatch):
    primary, secondary = os.openpty()
    with os.fdopen(secondary, "w") as tty, os.fdopen(primary, "rb", buffering=0) as reader:
        monkeypatch.setattr(sys, "stderr", tty)
        report = _check(None)
        tty.flush()
        text = _read_line(reader)
    assert report.verdict == "pass"
    # One 4-point stencil for all 30 columns (an elementwise rule's columns
    # share no output), a VJP per output.
    expected = 4 + 30
    assert f"100% {expected}/{expected} evaluations and VJPs" in text
    assert text.rstrip("\r\n").count("\n") == 0  # one line, redrawn in place


@pytest.mark.parametrize("progress", [None, False])
def test_check_is_quiet_off_a_terminal_and_when_off(quick, capsys, progress):
    report = _check(progress)
    assert report.verdict == "pass"
    assert capsys.readouterr().err == ""


def test_check_progress_true_draws_even_off_a_terminal(quick, capsys):
    _check(True)
    err = capsys.readouterr().err
    # (A line shorter than the one before it is padded with spaces.)
    assert err.startswith("\rgradguard: [") and err.rstrip(" \n").endswith(" s")
    assert err.endswith("\n")
    assert "100% 34/34 evaluations and VJPs" in err


def test_a_quick_check_is_quiet_even_when_asked(capsys):
    x = np.linspace(-1.0, 1.0, 5)
    gradguard.check(np.sin, x, vjp=lambda c, x: c * np.cos(x), mode="full", progress=True)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("together", [False, True])
def test_a_screened_check_fills_its_bar(quick, capsys, monkeypatch, together):
    """Past 64 inputs columns settle from two points each, or (coloured)
    all together from four; the bar counts those, the VJP rows, and reaches
    100% when the check ends."""
    monkeypatch.setattr(_colouring_module, "COLOUR_COLUMNS", together)
    n = 1100
    x = np.linspace(-1.0, 1.0, n)

    def f(x):
        time.sleep(0.0002)
        return np.sin(x) * x

    def vjp(cotangent, x):
        time.sleep(0.0002)  # the bar shows at 0.05 s even when four points do
        return slow_vjp(cotangent, x)

    report = gradguard.check(f, x, vjp=vjp, mode="full", progress=True)
    assert report.verdict == "pass"
    err = capsys.readouterr().err
    # A VJP per output, and two points per input or four for all of them.
    total = n + (4 if together else 2 * n)
    assert f"100% {total}/{total} evaluations and VJPs" in err
