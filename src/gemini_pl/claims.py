"""Paired claims over training seeds: "A beats B" measured as per-case differences within each seed.

Used by the demo (:mod:`gemini_pl.demo`), the pre-training tables' paired column
(:mod:`gemini_pl.reproduce.mip_table`) and the benchmarks. Conventions: a *row* is a dict of one
test case's metrics with a ``"case"`` key (as ``results/test_cases.csv`` and a cell's
``result.json`` hold them); differences are A − B in the metric's own unit (Dice in points).
"""

from __future__ import annotations

import math
import statistics
from typing import Any, Iterable

__all__ = ["paired_differences", "sample_sd", "seed_summary", "claim_verdict"]


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def paired_differences(rows_a: Iterable[dict[str, Any]], rows_b: Iterable[dict[str, Any]],
                       col_a: str, col_b: str | None = None) -> list[float]:
    """Per-case ``a[col_a] − b[col_b]`` over the cases both scored (matched by ``case``, in A's
    order; a case missing or non-finite on either side is left out)."""
    col_b = col_b or col_a
    b_by_case = {r["case"]: r for r in rows_b}
    out = []
    for r in rows_a:
        other = b_by_case.get(r["case"])
        if other is None:
            continue
        x, y = _num(r.get(col_a)), _num(other.get(col_b))
        if math.isfinite(x) and math.isfinite(y):
            out.append(x - y)
    return out


def sample_sd(values: list[float]) -> float:
    """The sample standard deviation (n − 1); 0 for fewer than two values."""
    return statistics.stdev(values) if len(values) > 1 else 0.0


def seed_summary(per_seed: list[list[float]]) -> dict[str, Any]:
    """The paired differences of each seed → ``{means, mean, sd, se, seeds, pairs, wins, verdict}``.

    With several seeds the claim "A beats B" **holds** when every seed's mean difference is
    positive and the mean over seeds exceeds two standard errors over seeds (``verdict`` "holds");
    "reversed" when the same holds with the sign flipped; otherwise "not significant". With one seed
    the standard error is over cases (verdicts "holds (1 seed)" / "reversed (1 seed)" / "not
    significant (1 seed)"). No paired case: ``verdict`` "no pairs".
    """
    per_seed = [d for d in per_seed if d]
    if not per_seed:
        return {"means": [], "mean": math.nan, "sd": math.nan, "se": math.nan, "seeds": 0, "pairs": 0, "wins": 0,
                "verdict": "no pairs"}
    means = [sum(d) / len(d) for d in per_seed]
    out = {"means": means, "seeds": len(means), "pairs": sum(len(d) for d in per_seed),
           "wins": sum(x > 0 for d in per_seed for x in d)}
    if len(means) > 1:
        mean, sd = statistics.fmean(means), sample_sd(means)
        se = sd / math.sqrt(len(means))
        up = all(m > 0 for m in means) and mean > 2 * se
        down = all(m < 0 for m in means) and mean < -2 * se
        verdict = "holds" if up else "reversed" if down else "not significant"
    else:
        d = per_seed[0]
        mean, sd = means[0], sample_sd(d)
        se = sd / math.sqrt(len(d)) if len(d) > 1 else math.inf
        verdict = ("holds" if mean > 2 * se else "reversed" if mean < -2 * se else "not significant") + " (1 seed)"
    return {**out, "mean": mean, "sd": sd, "se": se, "verdict": verdict}


def claim_verdict(per_seed: list[list[float]]) -> str:
    """One line for a report: per-seed means, their mean ± std (s.e.) over seeds, the cases where A
    scored higher, and the verdict of :func:`seed_summary` in words."""
    s = seed_summary(per_seed)
    if not s["seeds"]:
        return "no paired cases"
    if s["seeds"] > 1:
        spread = (f"per seed {', '.join(f'{m:+.2f}' for m in s['means'])}; over {s['seeds']} seeds "
                  f"{s['mean']:+.2f} ± {s['sd']:.2f} (s.e. {s['se']:.2f})")
        verdict = {"holds": "holds", "reversed": "does NOT hold: reversed (B is better in every seed)",
                   "not significant": "does NOT hold: within seed-to-seed variation"}[s["verdict"]]
    else:
        spread = f"per case {s['mean']:+.2f} ± {s['sd']:.2f} (s.e. {s['se']:.2f}), one seed"
        verdict = {"holds (1 seed)": "holds for this seed", "reversed (1 seed)": "does NOT hold (reversed for this seed)",
                   "not significant (1 seed)": "does NOT hold: within case-to-case noise"}[s["verdict"]]
    return f"{spread}; A higher on {s['wins']}/{s['pairs']} paired cases — {verdict}"
