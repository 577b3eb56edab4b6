"""The ledger's books -> the :class:`~gradguard.Report`: the verdict, the
reasons for doubt, the notes, and the diagnosis of a failed check."""

from __future__ import annotations

from ..core import diagnosis as core_diagnosis
from ..core.verdict import BAND
from ..report.report import ArgumentSummary, Report, Verdict
from .parts import Parts
from .problem import _describe


def write_report(
    parts: Parts, mode: str, direction: str, order: int, seconds: float, seed: int
) -> Report:
    """The check's Report, from its books."""
    p, ledger, numerical = parts.problem, parts.ledger, parts.numerical
    t = ledger.tally
    reasons = _reasons(parts)
    if ledger.uncertain_kinds.get("rough_agreeing"):
        p.notes.append(
            f"{ledger.uncertain_kinds['rough_agreeing']} compared value(s) sit on a kink "
            "(f is not differentiable there) and agree with the mean of the one-sided "
            "slopes"
        )
    noise = numerical.noise  # settles nondeterministic and noisy
    if numerical.nondeterministic:
        noise_text = (
            "f is not deterministic: two evaluations at the same x differ by up to "
            f"{float(parts.xp.max(noise)):.3g} (random dropout, unseeded noise, or "
            "nondeterministic reductions); seed or disable the randomness"
        )
        if numerical.noisy:
            reasons.insert(0, noise_text)
        else:
            p.notes.append(noise_text)
    if numerical.noisy:
        verdict: Verdict = "inconclusive"
    else:
        verdict = "fail" if t.wrong else "inconclusive" if t.uncertain else "pass"
    arguments = tuple(
        ArgumentSummary(
            name=p.in_names[i],
            shape=p.in_shapes[i],
            dtype=_describe([p.in_dtypes[i]]),
            relative_error=tally.relative_error,
            checked=tally.checked,
            wrong=tally.wrong,
            uncertain=tally.uncertain,
        )
        for i, tally in enumerate(ledger.by_argument)
    )
    diagnosis = _diagnosis(parts, mode) if verdict == "fail" else ()
    notes = list(p.notes)
    located = any(w.kind in ("entry", "cotangent") for w in parts.ledger.worst)
    if mode == "probe" and verdict == "fail" and not located:
        notes.append("probe mode cannot locate entries; rerun with mode='full' to see which")
    evaluator = parts.evaluator
    return Report(
        verdict=verdict,
        relative_error=t.relative_error,
        framework=p.adapter.name,
        mode=mode,
        direction=direction,
        order=order,
        precision=p.precision,
        path=evaluator.path or "vectorized",
        evaluations=evaluator.evaluations,
        seconds=seconds,
        seed=seed,
        num_inputs=p.in_layout.size,
        num_outputs=p.out_layout.size,
        checked=t.checked,
        wrong=t.wrong,
        uncertain=t.uncertain,
        worst=tuple(ledger.worst),
        arguments=arguments,
        diagnosis=diagnosis,
        reasons=tuple(reasons),
        notes=tuple(notes),
        error_map=ledger.error_map(),
        undecided_entries=tuple(sorted(set(ledger.undecided_cells))),
    )


def _reasons(parts: Parts) -> list[str]:
    """Why values were left uncertain, one sentence per kind, with the fix."""
    kinds, widest = parts.ledger.uncertain_kinds, parts.ledger.widest
    eps = float(parts.xp.finfo(parts.problem.work_dtype).eps)
    reasons = []
    if kinds.get("rough"):
        reasons.append(
            f"{kinds['rough']} compared value(s) sit where f is not smooth "
            "or not deterministic (one-sided differences disagree: a kink such as relu "
            "at 0, a max with ties, or noise); move x off the kink or check there by hand"
        )
    if kinds.get("nonfinite"):
        reasons.append(
            f"{kinds['nonfinite']} compared value(s) have NaN or inf in "
            "f near x; check at a point where f is finite"
        )
    if kinds.get("marginal"):
        reasons.append(
            f"{kinds['marginal']} compared value(s) differ by 1 to "
            f"{BAND:g} times the estimated precision, too close to call; "
            + (
                "check at another point (or with another seed) to decide"
                if eps < 1e-10
                else "check with float64 inputs (or a float64-capable f) to decide"
            )
        )
    if kinds.get("steep"):
        reasons.append(
            f"{kinds['steep']} compared value(s) agree only within what "
            "the step resolves: the derivative changes faster than the step (truncation "
            f"estimate up to {widest.get('steep', 0.0):.3g} of the value), too wide "
            "to tell a wrong derivative; check nearer to where f is gentler, or with "
            "a smaller eps"
        )
    if kinds.get("coarse"):
        reasons.append(
            f"{kinds['coarse']} compared value(s) agree only within f's "
            "measured resolution (rounding and noise of f up to "
            f"{widest.get('coarse', 0.0):.3g} of the value): f does not resolve "
            "its derivative here (it is quantised, or the derivative is far below "
            "f's rounding); check where f resolves it"
        )
    if kinds.get("faint"):
        reasons.append(
            f"{kinds['faint']} compared value(s) differ by more than the "
            "estimated precision but by less than "
            f"{eps**0.5:.2g} of the "
            "derivative's scale: rounding inside f or its rule that the estimates do not "
            "see, or a derivative wrong by that little; finite differences cannot tell"
        )
    return reasons


def _diagnosis(parts: Parts, mode: str) -> tuple[str, ...]:
    """What a failed check's evidence says went wrong."""
    p, ledger = parts.problem, parts.ledger
    ledger.count_settled()
    return core_diagnosis.diagnose(
        core_diagnosis.Evidence(
            tally=ledger.tally,
            arguments=list(zip(p.in_names, ledger.by_argument)),
            mode=mode,
            directions=ledger.directions,
            one_hot_wrong=ledger.one_hot_wrong,
            dense_wrong=ledger.dense_wrong,
            cotangent_ignored=parts.analytical.cotangent_ignored(),
            entries=ledger.entry_tally if ledger.entry_tally.checked else None,
            row_scales=ledger.row_scales,
            row_cross=ledger.row_cross,
            row_num_sq=ledger.row_num_sq,
            jacobians=ledger.jacobians,
            in_widths=[s.width for s in p.in_layout.slots],
            out_widths=[s.width for s in p.out_layout.slots],
            in_names=list(p.in_names),
            in_shapes=[s.shape for s in p.in_layout.slots],
            zero_arguments=ledger.zero_arguments,
        ),
        parts.xp,
    )
