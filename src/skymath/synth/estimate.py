"""`skymath estimate`: records, requests, tokens and a cost range per synth stage, before submitting.

Every record a method can yield is counted: a MetaMath or Xwin unit gives 0 or 1 record, an Evol
trajectory up to `max_steps` (one per surviving step). What survives is not known in advance, so
the estimate states its yield assumptions (acceptance probability per request step: the stage's
`yields`, over skymath.synth.target.DEFAULT_ACCEPTANCE) and gives:

- records: expected (from the assumptions) and the ceiling (every step survives);
- requests: expected, and the range from "every first step fails" to "every step survives";
- with `target_records`: the scale the configured per-seed counts are multiplied by so that the
  expected records reach the target (what the stage itself does, from measured yields);
- cost at `llm.model`'s price (else the reference model's): low / expected / high.

Prompt tokens come from rendering the real prompts for a sample of the real seeds and counting
them with the model's tokenizer when one is available (llm.tokenizer, or the llm-server's model),
else tiktoken, else ~4 characters per token.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from skymath.records import Record

SAMPLE = 40  # seeds whose prompts are rendered and counted per method
CHAT_OVERHEAD = 8  # role/format tokens per chat message


@dataclass
class StageEstimate:
    stage: str
    seeds: int
    seeds_note: str
    units: int
    requests_low: int
    requests_high: int
    prompt_tokens_low: int
    prompt_tokens_high: int
    completion_tokens_low: int
    completion_tokens_high: int
    cost_low_usd: float
    cost_high_usd: float
    price_model: str
    tokenizer: str
    requests_expected: int = 0
    records_expected: int = 0
    records_max: int = 0
    target_records: int | None = None
    scale: float = 1.0
    scale_capped: bool = False
    prompt_tokens_expected: int = 0
    completion_tokens_expected: int = 0
    cost_expected_usd: float = 0.0
    prices_as_of: str = ""
    yields: dict[str, float] = field(default_factory=dict)
    units_by_slot: dict[str, int] = field(default_factory=dict)


def make_counter(cfg) -> tuple[Callable[[str], int], str]:
    llm = cfg.llm
    ref = llm.tokenizer
    if ref is None and llm.service and llm.service in cfg.stages:
        ref = getattr(cfg.stages[llm.service].params, "model", None)
    if ref is not None:
        try:
            from transformers import AutoTokenizer

            from skymath.models import resolve_model

            tok = AutoTokenizer.from_pretrained(resolve_model(ref, run_root=cfg.run_dir))
            return (lambda s: len(tok.encode(s, add_special_tokens=False))), f"{ref} (model tokenizer)"
        except Exception:  # noqa: BLE001 - fall through to tiktoken / heuristic
            pass
    try:
        import tiktoken

        enc = tiktoken.encoding_for_model(llm.model)
        return (lambda s: len(enc.encode(s))), f"tiktoken:{enc.name}"
    except Exception:  # noqa: BLE001 - unknown model or no cached encoding offline
        return (lambda s: max(1, len(s) // 4)), "approx (4 chars/token)"


def stage_inputs(cfg, name: str, run_root: Path) -> tuple[list[Record], int, str]:
    """(sample records, total count, how known) for what stage `name` outputs."""
    from skymath.pipeline.rundir import RunDir
    from skymath.records import read_records
    from skymath.stages import stage_module

    spec = cfg.stages[name]
    run = RunDir(run_root)
    if run.stage_complete(name, spec.num_shards) and run.output_files(name, spec.num_shards):
        recs = list(read_records(run.output_files(name, spec.num_shards)))
        return recs, len(recs), "from the run directory"
    if spec.kind == "seeds":
        from skymath.data.seeds import load_seeds

        p = spec.params
        recs = load_seeds(p.sources, Path(cfg.data.root), p.levels, p.subjects, p.limit, p.sample_seed)
        return recs, len(recs), "seed files"
    if spec.kind == "synth":
        est, sample = estimate_stage(cfg, name, run_root, lambda s: max(1, len(s) // 4))
        return sample, est.records_expected, f"expected records of {name} (yields assumed)"
    samples: list[Record] = []
    count = 0
    for dep in spec.depends_on:
        s, n, _ = stage_inputs(cfg, dep, run_root)
        samples += s[:SAMPLE]
        count += n
    hook = getattr(stage_module(spec.kind), "estimate_output_count", None)
    if hook is not None:
        return samples, int(hook(spec.params, count)), f"{spec.kind}.estimate_output_count"
    return samples, count, f"assumed {spec.kind} passes its {count} inputs through"


def base_units(p, seeds: list[Record], total: int, sample: list[Record]) -> dict[str, int]:
    """Units per slot at the configured counts (scale 1), as the stage would plan them."""
    from skymath.synth.backward import maskable_numbers
    from skymath.synth.engine import assign_methods

    assigned = assign_methods(total, p.mix, p.mix_mode)
    known = len(seeds) == total  # every seed in hand: eligibility counted exactly, not sampled
    out: dict[str, int] = {}
    n_mm = sum("metamath" in ms for ms in assigned)
    if n_mm:
        if known:
            mm_seeds = [s for s, ms in zip(seeds, assigned, strict=True) if "metamath" in ms]
            eligible = sum(1 for s in mm_seeds if s.answer and s.answer.strip() and maskable_numbers(s.problem))
        else:
            ok = [s for s in sample if s.answer and s.answer.strip() and maskable_numbers(s.problem)]
            eligible = round(n_mm * len(ok) / max(1, len(sample)))
        for sub, k in p.metamath.samples.items():
            if k:
                out[f"metamath.{sub}"] = (eligible if sub in ("fobar", "self_verification") else n_mm) * k
    n_ev = sum("evol" in ms for ms in assigned) * p.evol.trajectories
    if n_ev:
        out["evol.trajectory"] = n_ev
    n_xw = sum("xwin" in ms for ms in assigned) * p.xwin.samples
    if n_xw:
        out["xwin.refine"] = n_xw
    return out


def estimate_stage(cfg, name: str, run_root: Path, count: Callable[[str], int]) -> tuple[StageEstimate, list[Record]]:
    from skymath.prompts import render
    from skymath.synth.accounting import price_for
    from skymath.synth.backward import fobar_question, maskable_numbers, self_verification_question
    from skymath.synth.engine import select_seeds
    from skymath.synth.target import acceptance, expected_per_unit

    p = cfg.stages[name].params
    llm = cfg.llm
    seeds: list[Record] = []
    total = 0
    notes = []
    for dep in cfg.stages[name].depends_on:
        s, n, note = stage_inputs(cfg, dep, run_root)
        seeds += s
        total += n
        notes.append(f"{dep}: {note}")
    if len(seeds) == total:  # every record known: apply the stage's own selection exactly
        seeds = select_seeds(seeds, p.levels, p.max_seeds)
        total = len(seeds)
    elif p.max_seeds is not None:
        total = min(total, p.max_seeds)
    max_tokens = p.max_tokens or llm.max_tokens
    ans_lo, ans_mid, ans_hi = min(150, max_tokens), min(350, max_tokens), min(600, max_tokens)
    sample = seeds[:SAMPLE] or [Record(id="x", problem="What is 2 + 3?", answer="5")]
    few = p.few_shot
    acc = acceptance(p.yields)
    steps = p.evol.max_steps

    def prompt_tokens(text: str) -> int:
        return count(text) + CHAT_OVERHEAD

    def avg(values: list[float]) -> float:
        return sum(values) / max(1, len(values))

    units0 = base_units(p, seeds, total, sample)
    per_unit = {s: expected_per_unit(s, acc, steps) for s in units0}
    expected0 = sum(n * per_unit[s][0] for s, n in units0.items())
    scale, capped = 1.0, False
    if p.target_records is not None and expected0 > 0:
        scale = p.target_records / expected0
        capped = scale > p.max_scale
        scale = min(scale, p.max_scale)
    units = {s: round(n * scale) for s, n in units0.items()}

    answer_prompt = avg([prompt_tokens(render("synth/answer", problem=s.problem, few_shot=few)) for s in sample])
    problem_tokens = avg([count(s.problem) for s in sample])
    req = {"lo": 0.0, "exp": 0.0, "hi": 0.0}
    pt = {"lo": 0.0, "exp": 0.0, "hi": 0.0}
    ct = {"lo": 0.0, "exp": 0.0, "hi": 0.0}
    records_exp = records_max = 0.0
    for slot, u in units.items():
        rec_e, req_e, rec_max = per_unit[slot]
        records_exp += u * rec_e
        records_max += u * rec_max
        req["exp"] += u * req_e
        method, sub = slot.split(".", 1)
        if method == "metamath":
            reqs = 2 if sub == "rephrase" else 1
            req["lo"] += u * reqs
            req["hi"] += u * reqs
            if sub in ("fobar", "self_verification"):
                build = fobar_question if sub == "fobar" else self_verification_question
                qs = [b.question for s in sample if s.answer and maskable_numbers(s.problem)
                      and (b := build(s.problem, s.answer or "", 0)) is not None]
                one = avg([prompt_tokens(render("synth/answer", problem=q, few_shot=few)) for q in qs]) if qs else 0
            else:
                one = answer_prompt
                if sub == "rephrase":
                    one += avg([prompt_tokens(render("synth/rephrase", problem=s.problem)) for s in sample])
            extra = (0.8 * problem_tokens, problem_tokens + 10, 2 * problem_tokens + 20) if sub == "rephrase" \
                else (0, 0, 0)
            for k in pt:
                pt[k] += u * one
            ct["lo"] += u * (ans_lo + extra[0])
            ct["exp"] += u * (ans_mid + extra[1])
            ct["hi"] += u * (ans_hi + extra[2])
        elif method == "evol":
            strategies = [s for s, w in p.evol.strategies.items() if w > 0]
            evolve = avg([prompt_tokens(render("synth/evol", problem=s.problem, strategy=st))
                          for s in sample for st in strategies])
            pe = acc["evol.evolve"]
            q = pe * acc["evol.answer"]
            attempts = sum(q ** (d - 1) for d in range(1, steps + 1))  # expected evolve requests
            req["lo"] += u
            req["hi"] += u * 2 * steps
            pt["lo"] += u * evolve
            pt["exp"] += u * attempts * (evolve * 1.15 + pe * answer_prompt * 1.15)  # problems grow
            pt["hi"] += u * steps * (evolve + answer_prompt) * 1.3
            ct["lo"] += u * 0.8 * problem_tokens
            ct["exp"] += u * attempts * (1.3 * problem_tokens + 10 + pe * ans_mid)
            ct["hi"] += u * steps * (2 * problem_tokens + 20 + ans_hi)
        else:  # xwin
            xw = avg([prompt_tokens(render("synth/xwin", problem=s.problem)) for s in sample])
            pr = acc["xwin.refine"]
            req["lo"] += u
            req["hi"] += 2 * u
            pt["lo"] += u * xw
            pt["exp"] += u * (xw + pr * answer_prompt)
            pt["hi"] += u * (xw + answer_prompt)
            ct["lo"] += u * min(150, max_tokens)
            ct["exp"] += u * (min(400, max_tokens) + pr * ans_mid)
            ct["hi"] += u * (min(700, max_tokens) + ans_hi)
    price = price_for(llm, llm.model)
    price_model = llm.model
    if price is None:
        price, price_model = price_for(llm, llm.reference_price_model), f"{llm.reference_price_model} (reference)"
    pp, pc = (price.prompt, price.completion) if price else (0.0, 0.0)

    def usd(k: str) -> float:
        return round((pt[k] * pp + ct[k] * pc) / 1e6, 2)

    est = StageEstimate(
        stage=name, seeds=total, seeds_note="; ".join(notes), units=sum(units.values()),
        requests_low=int(req["lo"]), requests_high=int(req["hi"]), requests_expected=round(req["exp"]),
        prompt_tokens_low=int(pt["lo"]), prompt_tokens_high=int(pt["hi"]), prompt_tokens_expected=int(pt["exp"]),
        completion_tokens_low=int(ct["lo"]), completion_tokens_high=int(ct["hi"]),
        completion_tokens_expected=int(ct["exp"]),
        cost_low_usd=usd("lo"), cost_high_usd=usd("hi"), cost_expected_usd=usd("exp"),
        price_model=price_model, tokenizer="", records_expected=round(records_exp), records_max=round(records_max),
        target_records=p.target_records, scale=round(scale, 4), scale_capped=capped,
        prices_as_of=llm.prices_as_of, yields={k: acc[k] for k in sorted(acc)}, units_by_slot=units,
    )
    return est, sample


def estimate(cfg) -> list[dict[str, Any]]:
    count, tok_name = make_counter(cfg)
    out = []
    for name, spec in cfg.stages.items():
        if spec.kind != "synth":
            continue
        est, _ = estimate_stage(cfg, name, cfg.run_dir, count)
        est.tokenizer = tok_name
        out.append(asdict(est))
    return out


def _fmt(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}" if unit == "M" else f"{n / div:.1f}{unit}"
    return f"{n:g}"


def format_estimate(rows: list[dict[str, Any]]) -> list[str]:
    """The `skymath estimate` table: expected records (and the ceiling), requests, tokens and cost
    (low / expected / high), then the yield assumptions and where the seeds come from."""
    head = (f"{'stage':<14} {'seeds':>7} {'scale':>6} {'records exp (max)':>19} {'requests exp [range]':>24} "
            f"{'prompt tok':>9} {'compl tok':>9} {'cost USD exp [range]':>28}")
    out = [head, "-" * len(head)]
    for r in rows:
        out.append(
            f"{r['stage']:<14} {r['seeds']:>7} {r['scale']:>6.2f} "
            f"{_fmt(r['records_expected']) + ' (' + _fmt(r['records_max']) + ')':>19} "
            f"{_fmt(r['requests_expected']) + ' [' + _fmt(r['requests_low']) + '-' + _fmt(r['requests_high']) + ']':>24} "
            f"{_fmt(r['prompt_tokens_expected']):>9} {_fmt(r['completion_tokens_expected']):>9} "
            f"{r['cost_expected_usd']:>10,.0f} [{r['cost_low_usd']:,.0f}-{r['cost_high_usd']:,.0f}]")
    out.append("")
    first = rows[0]
    out.append(f"prices: {first['price_model']} (table as of {first['prices_as_of']}); "
               f"tokens counted with {first['tokenizer']}")
    for r in rows:
        target = (f"target {r['target_records']:,} records: configured per-seed counts x {r['scale']:.2f}"
                  + (" (capped at max_scale: the target is out of reach)" if r["scale_capped"] else "")
                  if r["target_records"] else "no target: configured per-seed counts")
        acc = ", ".join(f"{k} {v:g}" for k, v in r["yields"].items())
        out.append(f"{r['stage']}: {target}; seeds from {r['seeds_note']}")
        out.append(f"  assumed acceptance per step (the stage's `yields`; a run measures them in summary.json): {acc}")
    out.append("records: expected from the assumptions, (max) if every step survived (Evol: max_steps per chain); "
               "requests: [every first step fails - every step survives]")
    return out
