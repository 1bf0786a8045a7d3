"""Accuracy tables from per-sample results: overall, by MATH level, by subject, by number of
distractors, strict and lenient, each with a 95% bootstrap confidence interval."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

MATH_SUBJECTS = (
    "Algebra", "Counting & Probability", "Geometry", "Intermediate Algebra",
    "Number Theory", "Prealgebra", "Precalculus",
)
N_BOOT = 1000


def bootstrap_ci(values: list[bool] | list[int], n_boot: int = N_BOOT, seed: int = 0,
                 alpha: float = 0.05) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean (deterministic for a seed); (nan, nan) when empty."""
    import numpy as np

    if not values:
        return (float("nan"), float("nan"))
    arr = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    means = arr[rng.integers(0, len(arr), size=(n_boot, len(arr)))].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return (round(float(lo), 6), round(float(hi), 6))


def accuracy(rows: list[Mapping[str, Any]], n_boot: int = N_BOOT) -> dict[str, Any]:
    """{n, strict, lenient, strict_ci, lenient_ci} for a list of result rows."""
    strict = [bool(r["correct_strict"]) for r in rows]
    lenient = [bool(r["correct_lenient"]) for r in rows]
    n = len(rows)
    return {
        "n": n,
        "strict": round(sum(strict) / n, 6) if n else None,
        "lenient": round(sum(lenient) / n, 6) if n else None,
        "strict_ci": list(bootstrap_ci(strict, n_boot)),
        "lenient_ci": list(bootstrap_ci(lenient, n_boot)),
    }


def _group(rows: Iterable[Mapping[str, Any]], key: str) -> dict[Any, list[Mapping[str, Any]]]:
    out: dict[Any, list[Mapping[str, Any]]] = defaultdict(list)
    for r in rows:
        if r.get(key) is not None:
            out[r[key]].append(r)
    return out


def result_row(rec: Mapping[str, Any]) -> dict[str, Any]:
    """Flatten a results Record (dict) into the fields metrics use."""
    meta = rec.get("meta") or {}
    return {
        "id": rec.get("id"),
        "benchmark": meta.get("benchmark", rec.get("source")),
        "kind": meta.get("kind"),
        "level": rec.get("level"),
        "subject": rec.get("subject"),
        "distractors": meta.get("distractors"),
        "correct_strict": bool(meta.get("correct_strict")),
        "correct_lenient": bool(meta.get("correct_lenient")),
        "completion_tokens": meta.get("completion_tokens") or 0,
    }


def compute_metrics(rows: list[Mapping[str, Any]], n_boot: int = N_BOOT) -> dict[str, Any]:
    """Per benchmark: overall, by_level, by_subject (MATH kinds), by_distractors (GSM8K kinds).

    The distractor curve's 0 point is the plain GSM8K benchmark of the same result set.
    """
    out: dict[str, Any] = {"benchmarks": {}, "n": len(rows)}
    by_bench = _group(rows, "benchmark")
    for name in sorted(by_bench):
        brows = by_bench[name]
        entry: dict[str, Any] = {"kind": brows[0].get("kind"), "overall": accuracy(brows, n_boot)}
        if entry["kind"] == "math":
            levels = _group(brows, "level")
            entry["by_level"] = {str(lv): accuracy(levels[lv], n_boot) for lv in sorted(levels)}
            subjects = _group(brows, "subject")
            order = [s for s in MATH_SUBJECTS if s in subjects] + sorted(set(subjects) - set(MATH_SUBJECTS))
            entry["by_subject"] = {s: accuracy(subjects[s], n_boot) for s in order}
        entry["mean_completion_tokens"] = round(
            sum(r.get("completion_tokens") or 0 for r in brows) / len(brows), 2) if brows else 0
        out["benchmarks"][name] = entry
    gsm = [r for r in rows if r.get("kind") == "gsm8k"]
    with_d = [r for r in gsm if r.get("distractors")]
    if with_d:
        plain = [dict(r, distractors=0) for r in gsm if not r.get("distractors")]
        groups = _group(plain + with_d, "distractors")
        out["by_distractors"] = {str(k): accuracy(groups[k], n_boot) for k in sorted(groups)}
    return out
