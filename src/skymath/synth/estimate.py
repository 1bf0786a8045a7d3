"""`skymath estimate`: requests, prompt tokens and a cost range per synth stage, before submitting.

Prompt tokens come from rendering the real prompts for a sample of the real seeds and counting
them with the model's tokenizer when one is available (llm.tokenizer, or the llm-server's model),
else tiktoken, else ~4 characters per token. Completion tokens and Evol survival are unknown in
advance, so requests and cost are a range: the low end assumes short answers and every evolution
failing at its first step, the high end long answers and every trajectory reaching max_steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
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
        return sample, est.units, "upper bound: one record per unit (Evol: per step survives)"
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


def estimate_stage(cfg, name: str, run_root: Path, count: Callable[[str], int]) -> tuple[StageEstimate, list[Record]]:
    from skymath.prompts import render
    from skymath.synth.accounting import price_for
    from skymath.synth.backward import fobar_question, maskable_numbers, self_verification_question
    from skymath.synth.engine import assign_methods, select_seeds

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
    ans_lo, ans_hi = min(150, max_tokens), min(600, max_tokens)

    def prompt_tokens(text: str) -> int:
        return count(text) + CHAT_OVERHEAD

    assigned = assign_methods(total, p.mix, p.mix_mode)
    per_method = {m: sum(m in ms for ms in assigned) for m in ("metamath", "evol", "xwin")}
    sample = seeds[:SAMPLE] or [Record(id="x", problem="What is 2 + 3?", answer="5")]
    few = p.few_shot

    def avg(values: list[float]) -> float:
        return sum(values) / max(1, len(values))

    answer_prompt = avg([prompt_tokens(render("synth/answer", problem=s.problem, few_shot=few)) for s in sample])
    problem_tokens = avg([count(s.problem) for s in sample])
    units = req_lo = req_hi = 0
    pt_lo = pt_hi = ct_lo = ct_hi = 0.0
    n = per_method["metamath"]
    if n:
        for sub, k in p.metamath.samples.items():
            if not k:
                continue
            if sub in ("fobar", "self_verification"):
                ok = [s for s in sample if s.answer and maskable_numbers(s.problem)]
                share = len(ok) / len(sample)
                build = fobar_question if sub == "fobar" else self_verification_question
                qs = [b.question for s in ok if (b := build(s.problem, s.answer or "", 0)) is not None]
                pt = avg([prompt_tokens(render("synth/answer", problem=q, few_shot=few)) for q in qs]) if qs else 0
                u = round(n * k * share)
                units += u
                req_lo += u
                req_hi += u
                pt_lo += u * pt
                pt_hi += u * pt
                ct_lo += u * ans_lo
                ct_hi += u * ans_hi
            else:
                u = n * k
                reqs = 1 if sub == "answer_aug" else 2
                pt = answer_prompt
                if sub == "rephrase":
                    pt += avg([prompt_tokens(render("synth/rephrase", problem=s.problem)) for s in sample])
                units += u
                req_lo += u * reqs
                req_hi += u * reqs
                pt_lo += u * pt
                pt_hi += u * pt
                extra = (0.8 * problem_tokens, 2 * problem_tokens + 20) if sub == "rephrase" else (0, 0)
                ct_lo += u * (ans_lo + extra[0])
                ct_hi += u * (ans_hi + extra[1])
    n = per_method["evol"] * p.evol.trajectories
    if n:
        strategies = [s for s, w in p.evol.strategies.items() if w > 0]
        evolve = avg([prompt_tokens(render("synth/evol", problem=s.problem, strategy=st))
                      for s in sample for st in strategies])
        steps = p.evol.max_steps
        units += n
        req_lo += n  # the first evolution fails
        req_hi += n * 2 * steps
        pt_lo += n * evolve
        pt_hi += n * steps * (evolve + answer_prompt) * 1.3  # problems grow as they evolve
        ct_lo += n * 0.8 * problem_tokens
        ct_hi += n * steps * (2 * problem_tokens + 20 + ans_hi)
    n = per_method["xwin"] * p.xwin.samples
    if n:
        xw = avg([prompt_tokens(render("synth/xwin", problem=s.problem)) for s in sample])
        units += n
        req_lo += n
        req_hi += 2 * n
        pt_lo += n * xw
        pt_hi += n * (xw + answer_prompt)
        ct_lo += n * min(150, max_tokens)
        ct_hi += n * (min(700, max_tokens) + ans_hi)
    price = price_for(llm, llm.model)
    price_model = llm.model
    if price is None:
        price, price_model = price_for(llm, llm.reference_price_model), f"{llm.reference_price_model} (reference)"
    pp, pc = (price.prompt, price.completion) if price else (0.0, 0.0)
    est = StageEstimate(
        stage=name, seeds=total, seeds_note="; ".join(notes), units=units, requests_low=req_lo,
        requests_high=req_hi, prompt_tokens_low=int(pt_lo), prompt_tokens_high=int(pt_hi),
        completion_tokens_low=int(ct_lo), completion_tokens_high=int(ct_hi),
        cost_low_usd=round((pt_lo * pp + ct_lo * pc) / 1e6, 2), cost_high_usd=round((pt_hi * pp + ct_hi * pc) / 1e6, 2),
        price_model=price_model, tokenizer="",
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
