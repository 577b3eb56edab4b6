"""Reading a gradguard Report in tests, the same way in every framework's file."""

from __future__ import annotations


def wrong(report):
    """The located wrong entries of a report."""
    return [m for m in report.worst if m.status == "wrong"]


def assert_fail_at(report, argument, indices=None):
    """Fails, and every located wrong entry is in ``argument`` (at ``indices``)."""
    assert report.verdict == "fail", str(report)
    # Located entries (one-hot) and random cotangents name an input entry;
    # random forward tangents name none.
    bad = [m for m in wrong(report) if m.kind in ("entry", "cotangent")]
    assert bad, str(report)
    assert all(m.argument == argument for m in bad), str(report)
    if indices is not None:
        assert {m.index for m in bad} <= set(indices), str(report)


def diagnosis(report):
    """The diagnosis sentences as one string."""
    return " ".join(report.diagnosis)
