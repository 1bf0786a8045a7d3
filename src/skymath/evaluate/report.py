"""Reports: markdown + CSV tables shaped like the paper's (overall GSM8K/MATH, MATH by level,
MATH by subject, accuracy vs distractors, data scaling) and PNG plots, plus a summary of the
whole run (records per stage, tokens and what a real API would have charged, where artifacts are).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skymath.errors import UserError
from skymath.evaluate.metrics import MATH_SUBJECTS
from skymath.pipeline.rundir import RunDir

# (name in the report, key in metrics.json): the paper's protocol and the default symbolic grader
TABLE_PROTOCOLS = (("paper", "paper"), ("symbolic", "strict"))
PLOT_MODE = "strict"  # plots use the symbolic grader (strict extraction); the tables have both
SUMMARY_KEYS = ("failed", "api_requests", "api_prompt_tokens", "api_completion_tokens", "api_cost_usd",
                "local_prompt_tokens", "local_completion_tokens", "reference_cost_usd")


@dataclass
class EvalResult:
    run: str
    stage: str
    label: str
    metrics: dict[str, Any]
    sft_samples: int
    stage_dir: Path


@dataclass
class Table:
    name: str
    title: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)

    def markdown(self) -> str:
        def cell(v: Any) -> str:
            if isinstance(v, dict) and "acc" in v:
                if v["acc"] is None:
                    return "-"
                lo, hi = v.get("ci") or (None, None)
                ci = f" ({100 * lo:.1f}-{100 * hi:.1f})" if lo is not None and lo == lo else ""
                return f"{100 * v['acc']:.1f}{ci} n={v['n']}"
            if isinstance(v, float):
                return f"{v:.4g}"
            return "-" if v is None or v == "" else str(v).replace("|", "\\|")

        lines = [f"| {' | '.join(self.columns)} |", "|" + "---|" * len(self.columns)]
        lines += [f"| {' | '.join(cell(v) for v in row)} |" for row in self.rows]
        return "\n".join(lines)

    def csv(self) -> str:
        cols: list[str] = []
        for c in self.columns:
            cols.append(c)
        buf = io.StringIO()
        w = csv.writer(buf)
        header: list[str] = []
        for k, c in enumerate(cols):
            if any(isinstance(r[k], dict) for r in self.rows):
                header += [c, f"{c} ci_low", f"{c} ci_high", f"{c} n"]
            else:
                header.append(c)
        w.writerow(header)
        for r in self.rows:
            out: list[Any] = []
            for k, v in enumerate(r):
                if any(isinstance(x[k], dict) for x in self.rows):
                    v = v if isinstance(v, dict) else {}
                    lo, hi = v.get("ci") or (None, None)
                    out += [v.get("acc"), lo, hi, v.get("n")]
                else:
                    out.append(v)
            w.writerow(out)
        return buf.getvalue()


def _acc(entry: dict[str, Any] | None, mode: str = "strict") -> dict[str, Any] | None:
    if not entry:
        return None
    return {"acc": entry.get(mode), "ci": entry.get(f"{mode}_ci"), "n": entry.get("n")}


def open_run(path: str | Path) -> RunDir:
    p = Path(path)
    if not (p / "config.yaml").exists() and (Path("runs") / p / "config.yaml").exists():
        p = Path("runs") / p
    if not (p / "config.yaml").exists():
        raise UserError(f"{path}: not a run directory (no config.yaml)")
    return RunDir(p)


def eval_results(run: RunDir, cfg=None) -> list[EvalResult]:
    """Every eval stage of a run with merged metrics (merging now if all shards are done)."""
    from skymath.pipeline.dag import Pipeline
    from skymath.stages.evaluate import METRICS, merge

    cfg = cfg or run.load_config()
    out = []
    for name in Pipeline.from_config(cfg).order:
        spec = cfg.stages[name]
        if spec.kind != "eval":
            continue
        mpath = run.stage_dir(name) / METRICS
        metrics = json.loads(mpath.read_text(encoding="utf-8")) if mpath.exists() else merge(run, cfg, name)
        if metrics is None:
            continue
        out.append(EvalResult(run=run.root.name, stage=name, label=metrics.get("label") or name, metrics=metrics,
                              sft_samples=int(metrics.get("sft_samples") or 0), stage_dir=run.stage_dir(name)))
    return out


def run_summary(run: RunDir, cfg=None) -> tuple[Table, dict[str, Any]]:
    """Records, failures, tokens and spend per stage (from the `.done` markers) and artifact paths.

    Paid API spend and local generation are separate columns (`skymath.synth.accounting.split_spend`):
    API requests/tokens/cost at the configured prices; tokens generated locally (hf, vllm,
    self-hosted servers) cost nothing and are priced only in the reference column (what the
    reference API model would have charged for every token of the stage).
    """
    from skymath.pipeline.dag import Pipeline
    from skymath.synth.accounting import cost, price_for, split_spend

    cfg = cfg or run.load_config()
    ref = price_for(cfg.llm, cfg.llm.reference_price_model)
    table = Table("run_summary", "Run summary", ["stage", "kind", "shards done", "records", "failed",
                                                 "API requests", "API prompt tokens", "API completion tokens",
                                                 "API cost USD", "local prompt tokens", "local completion tokens",
                                                 "reference cost USD", "artifacts"])
    totals = dict.fromkeys(SUMMARY_KEYS, 0)
    for name in Pipeline.from_config(cfg).order:
        spec = cfg.stages[name]
        done = run.done_shards(name, spec.num_shards)
        records, failed = 0, 0
        row = dict.fromkeys(SUMMARY_KEYS, 0)
        for i in done:
            m = run.read_marker(run.done_path(name, i)) or {}
            records += int(m.get("records", 0) or 0)
            failed += int(m.get("failed", (m.get("units") or {}).get("failed", 0)) or 0)
            spend = split_spend(m)
            for side in ("api", "local"):
                for k, v in spend[side].items():
                    row[f"{side}_{k}"] += v
        row["reference_cost_usd"] = cost(ref, row["api_prompt_tokens"] + row["local_prompt_tokens"],
                                         row["api_completion_tokens"] + row["local_completion_tokens"])
        row["failed"] = failed
        for k in SUMMARY_KEYS:
            totals[k] += row[k]
        table.rows.append([name, spec.kind, f"{len(done)}/{spec.num_shards}", records, failed, row["api_requests"],
                           row["api_prompt_tokens"], row["api_completion_tokens"], round(row["api_cost_usd"], 4),
                           row["local_prompt_tokens"], row["local_completion_tokens"],
                           round(row["reference_cost_usd"], 4), _artifacts(run, name, spec)])
    table.rows.append(["total", "", "", "", totals["failed"], totals["api_requests"], totals["api_prompt_tokens"],
                       totals["api_completion_tokens"], round(totals["api_cost_usd"], 4), totals["local_prompt_tokens"],
                       totals["local_completion_tokens"], round(totals["reference_cost_usd"], 4), ""])
    return table, totals


def _artifacts(run: RunDir, name: str, spec) -> str:
    d = run.stage_dir(name)
    found = []
    if (d / "model").is_dir():
        found.append(str(d / "model"))
    for f in ("results.jsonl", "metrics.json"):
        if (d / f).exists():
            found.append(str(d / f))
    if not found and any(d.glob("shard-*.jsonl")):
        found.append(str(d / "shard-*.jsonl"))
    return ", ".join(found)


def build_tables(results: list[EvalResult], multi_run: bool = False) -> list[Table]:
    def who(r: EvalResult) -> str:
        return f"{r.run}/{r.label}" if multi_run else r.label

    benches: list[str] = []
    for r in results:
        for b in r.metrics.get("benchmarks", {}):
            if b not in benches:
                benches.append(b)
    overall = Table("overall", "Accuracy (%): the paper's protocol beside the symbolic grader (95% bootstrap CI); "
                    "failed = generations that failed and were not graded",
                    ["model", "SFT samples"] + [f"{b} {c}" for b in benches for c in ("paper", "symbolic", "failed")])
    lenient = Table("overall_lenient", "Accuracy (%), symbolic grader on the lenient extraction", ["model"] + benches)
    for r in results:
        bm = r.metrics.get("benchmarks", {})
        row: list[Any] = [who(r), r.sft_samples]
        for b in benches:
            e = bm.get(b, {}).get("overall")
            row += [_acc(e, "paper"), _acc(e, "strict"), (e or {}).get("failed", 0) if e else None]
        overall.rows.append(row)
        lenient.rows.append([who(r)] + [_acc(bm.get(b, {}).get("overall"), "lenient") for b in benches])
    levels = Table("math_by_level", "MATH accuracy (%) by level", ["model", "benchmark", "protocol"]
                   + [f"Level {i}" for i in range(1, 6)])
    subjects = Table("math_by_subject", "MATH accuracy (%) by subject", ["model", "benchmark", "protocol", *MATH_SUBJECTS])
    for r in results:
        for b, e in r.metrics.get("benchmarks", {}).items():
            if e.get("kind") != "math":
                continue
            for proto, mode in TABLE_PROTOCOLS:
                levels.rows.append([who(r), b, proto] + [_acc(e.get("by_level", {}).get(str(i)), mode) for i in range(1, 6)])
                subjects.rows.append([who(r), b, proto] + [_acc(e.get("by_subject", {}).get(s), mode) for s in MATH_SUBJECTS])
    distract = Table("distractors", "GSM8K accuracy (%) vs number of distractor sentences",
                     ["model", "protocol"] + [str(k) for k in range(6)])
    for r in results:
        bd = r.metrics.get("by_distractors")
        if bd:
            for proto, mode in TABLE_PROTOCOLS:
                distract.rows.append([who(r), proto] + [_acc(bd.get(str(k)), mode) for k in range(6)])
    scaling = Table("scaling", "Accuracy (%) vs number of SFT samples",
                    ["run", "model", "SFT samples"] + [f"{b} {proto}" for b in benches for proto, _ in TABLE_PROTOCOLS])
    for r in sorted((r for r in results if r.sft_samples > 0), key=lambda r: r.sft_samples):
        bm = r.metrics.get("benchmarks", {})
        scaling.rows.append([r.run, r.label, r.sft_samples] + [_acc(bm.get(b, {}).get("overall"), mode)
                                                               for b in benches for _, mode in TABLE_PROTOCOLS])
    return [t for t in (overall, lenient, levels, subjects, distract, scaling) if t.rows]


def _plot_lines(path: Path, title: str, xlabels: list[str], series: dict[str, list[dict | None]],
                xlabel: str, xs: list[float] | None = None, logx: bool = False) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, vals in series.items():
        pts = [(xs[i] if xs else i, v) for i, v in enumerate(vals) if v and v.get("acc") is not None]
        if not pts:
            continue
        x = [p[0] for p in pts]
        y = [100 * p[1]["acc"] for p in pts]
        lo = [max(0.0, yy - 100 * (p[1]["ci"][0] if p[1].get("ci") and p[1]["ci"][0] == p[1]["ci"][0] else p[1]["acc"]))
              for yy, p in zip(y, pts, strict=True)]
        hi = [max(0.0, 100 * (p[1]["ci"][1] if p[1].get("ci") and p[1]["ci"][1] == p[1]["ci"][1] else p[1]["acc"]) - yy)
              for yy, p in zip(y, pts, strict=True)]
        ax.errorbar(x, y, yerr=[lo, hi], marker="o", capsize=3, label=name)
    if logx:
        ax.set_xscale("log")
    elif not xs:
        ax.set_xticks(range(len(xlabels)))
        ax.set_xticklabels(xlabels, rotation=20 if max(len(s) for s in xlabels) > 8 else 0, ha="right" if max(len(s) for s in xlabels) > 8 else "center")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(bottom=0)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def build_plots(results: list[EvalResult], out: Path, multi_run: bool = False) -> list[Path]:
    def who(r: EvalResult) -> str:
        return f"{r.run}/{r.label}" if multi_run else r.label

    made: list[Path] = []
    lv: dict[str, list] = {}
    sj: dict[str, list] = {}
    for r in results:
        for b, e in r.metrics.get("benchmarks", {}).items():
            if e.get("kind") == "math":
                lv[f"{who(r)} {b}"] = [_acc(e.get("by_level", {}).get(str(i))) for i in range(1, 6)]
                sj[f"{who(r)} {b}"] = [_acc(e.get("by_subject", {}).get(s)) for s in MATH_SUBJECTS]
    if lv:
        _plot_lines(out / "math_by_level.png", "MATH accuracy by level (symbolic grader)", [f"L{i}" for i in range(1, 6)], lv, "level")
        _plot_lines(out / "math_by_subject.png", "MATH accuracy by subject (symbolic grader)", list(MATH_SUBJECTS), sj, "subject")
        made += [out / "math_by_level.png", out / "math_by_subject.png"]
    dis = {who(r): [_acc(r.metrics["by_distractors"].get(str(k))) for k in range(6)]
           for r in results if r.metrics.get("by_distractors")}
    if dis:
        _plot_lines(out / "distractors.png", "GSM8K accuracy vs distractor sentences (symbolic grader)", [str(k) for k in range(6)],
                    dis, "distractor sentences")
        made.append(out / "distractors.png")
    pts = sorted((r for r in results if r.sft_samples > 0), key=lambda r: r.sft_samples)
    if len({r.sft_samples for r in pts}) >= 2:
        series: dict[str, list] = {}
        benches = sorted({b for r in pts for b in r.metrics.get("benchmarks", {})})
        xs = [float(r.sft_samples) for r in pts]
        for b in benches:
            series[b] = [_acc(r.metrics.get("benchmarks", {}).get(b, {}).get("overall")) for r in pts]
        _plot_lines(out / "scaling.png", "Accuracy vs SFT samples (symbolic grader)", [], series, "SFT samples (log)", xs=xs, logx=True)
        made.append(out / "scaling.png")
    return made


PROTOCOL_NOTES = [
    "Protocols: **paper** = the paper's protocol, reproduced exactly: MetaMath's evaluation (the text after "
    "the last \"The answer is\"; GSM8K: its first number, rounded to an integer; MATH: a string match after "
    "the hendrycks normalization, so a correct value in another format counts as wrong). **symbolic** = "
    "skymath's grader on the same text: equivalent values count (\\frac12 = 0.5, ordered tuples, unordered "
    "solution sets, sympy equality with exact comparison of exact values); a hedge (\"5 or 6\") never counts. "
    "**lenient** (its own table) = the symbolic grader on a lenient extraction that also reads \\boxed{}, "
    "\"the final answer is\", a trailing x = ... or a final number. Quote the paper column next to the paper's "
    "tables; the gap to symbolic is correct answers in formats the paper's protocol does not accept.",
    "",
    "A generation that failed (API error, timeout, server gone, engine error) is never graded: it is "
    "counted in the failed column, not in n.",
]


def write_report(run_path: str | Path, compare: list[str | Path] | None = None, out_dir: str | Path | None = None) -> Path:
    """Write report.md, one CSV per table and the PNG plots into out_dir (default RUN/report)."""
    run = open_run(run_path)
    cfg = run.load_config()
    runs = [run] + [open_run(c) for c in (compare or [])]
    results: list[EvalResult] = []
    for r in runs:
        results.extend(eval_results(r, cfg if r is run else None))
    out = Path(out_dir) if out_dir else run.root / "report"
    out.mkdir(parents=True, exist_ok=True)
    multi = len(runs) > 1
    tables = build_tables(results, multi_run=multi)
    summary, totals = run_summary(run, cfg)
    plots = build_plots(results, out, multi_run=multi)
    from skymath.records import atomic_write_text

    md = [f"# skymath report: {run.root.name}", ""]
    if not results:
        md += ["No finished eval stage yet.", ""]
    for t in tables:
        md += [f"## {t.title}", "", t.markdown(), ""]
        atomic_write_text(out / f"{t.name}.csv", t.csv())
    if results:
        md += PROTOCOL_NOTES + [""]
        failed = [(r.label, r.metrics.get("failed", 0), r.metrics.get("first_failure")) for r in results]
        for label, k, first in failed:
            if k:
                md += [f"**{label}: {k} generation(s) failed and were not graded** (within the stage's "
                       f"failure_tolerance; first: {first}). Accuracies are over the graded items only.", ""]
    for pth in plots:
        md += [f"![{pth.stem}]({pth.name})", ""]
    md += __import__("skymath.train.report", fromlist=["x"]).sft_section(run, cfg, out)  # SFT curves, tokens/s, MFU
    md += [f"## {summary.title}", "", summary.markdown(), "",
           f"API spend: {totals['api_requests']:,} requests, {totals['api_prompt_tokens']:,} prompt + "
           f"{totals['api_completion_tokens']:,} completion tokens, {totals['api_cost_usd']:.4f} USD at the "
           f"configured prices. Local generation (hf, vllm, self-hosted servers; no API spend): "
           f"{totals['local_prompt_tokens']:,} prompt + {totals['local_completion_tokens']:,} completion tokens. "
           f"All tokens at the reference API price ({cfg.llm.reference_price_model}): "
           f"{totals['reference_cost_usd']:.4f} USD.", "",
           "## Artifacts", ""]
    for r in results:
        md.append(f"- {r.label}: results `{r.stage_dir / 'results.jsonl'}`, metrics `{r.stage_dir / 'metrics.json'}`")
    for name, spec in cfg.stages.items():
        mdir = run.stage_dir(name) / "model"
        if mdir.is_dir():
            md.append(f"- model of stage {name} ({spec.kind}): `{mdir}`")
    md += [f"- this report: `{out / 'report.md'}` (tables as CSV beside it)", ""]
    atomic_write_text(out / summary.name.__add__(".csv"), summary.csv())
    atomic_write_text(out / "report.md", "\n".join(md))
    return out / "report.md"
