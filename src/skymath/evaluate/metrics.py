"""Accuracy tables from per-sample results: overall, by MATH level, by subject, by number of
distractors, each with a 95% bootstrap confidence interval, under three protocols:

    paper    the paper's protocol, MetaMath's evaluation (`skymath.evaluate.paper_protocol`)
    strict   the symbolic grader on the text after the last "The answer is"
    lenient  the symbolic grader on the lenient extraction (also \\boxed{}, a final number, ...)

`n` counts graded items only. Failed generations (never graded) are counted apart as `failed`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

MATH_SUBJECTS = (
    "Algebra", "Counting & Probability", "Geometry", "Intermediate Algebra",
    "Number Theory", "Prealgebra", "Precalculus",
)
N_BOOT = 1000
PROTOCOLS = {
    "paper": "the paper's protocol: MetaMath's evaluation (text after the last \"The answer is\"; GSM8K: "
             "first number, rounded; MATH: string match after hendrycks normalization)",
    "strict": "symbolic grader (skymath) on the text after the last \"The answer is\"",
    "lenient": "symbolic grader (skymath) on a lenient extraction (also \\boxed{}, \"the final answer is\", "
               "a trailing x = ..., a final number)",
}


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


def accuracy(rows: list[Mapping[str, Any]], n_boot: int = N_BOOT, failed: int = 0) -> dict[str, Any]:
    """{n, failed, paper, strict, lenient and their CIs} for a list of graded result rows.

    `paper` is None when a row has no paper verdict (results written before the protocol existed).
    """
    n = len(rows)
    out: dict[str, Any] = {"n": n, "failed": failed}
    for proto in PROTOCOLS:
        vals = [r.get(f"correct_{proto}") for r in rows]
        if any(v is None for v in vals):
            out[proto], out[f"{proto}_ci"] = None, [float("nan"), float("nan")]
            continue
        bools = [bool(v) for v in vals]
        out[proto] = round(sum(bools) / n, 6) if n else None
        out[f"{proto}_ci"] = list(bootstrap_ci(bools, n_boot))
    return out


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
        "correct_paper": None if meta.get("correct_paper") is None else bool(meta["correct_paper"]),
        "correct_strict": bool(meta.get("correct_strict")),
        "correct_lenient": bool(meta.get("correct_lenient")),
        "completion_tokens": meta.get("completion_tokens") or 0,
    }


def compute_metrics(rows: list[Mapping[str, Any]], n_boot: int = N_BOOT,
                    failures: list[Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Per benchmark: overall, by_level, by_subject (MATH kinds), by_distractors (GSM8K kinds).

    The distractor curve's 0 point is the plain GSM8K benchmark of the same result set. Failures
    (failed generations, each {id, benchmark, error, ...}) are counted, never graded.
    """
    failures = list(failures or [])
    failed_by_bench: dict[str, int] = defaultdict(int)
    for f in failures:
        failed_by_bench[f.get("benchmark")] += 1
    out: dict[str, Any] = {"benchmarks": {}, "n": len(rows), "failed": len(failures),
                           "protocols": dict(PROTOCOLS)}
    if failures:
        out["first_failure"] = failures[0].get("error")
    by_bench = _group(rows, "benchmark")
    kinds = {f.get("benchmark"): f.get("kind") for f in failures}
    for name in sorted(set(by_bench) | set(failed_by_bench)):
        brows = by_bench.get(name, [])
        entry: dict[str, Any] = {"kind": brows[0].get("kind") if brows else kinds.get(name),
                                 "overall": accuracy(brows, n_boot, failed=failed_by_bench.get(name, 0))}
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
