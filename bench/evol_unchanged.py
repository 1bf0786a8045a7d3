"""Evol-Instruct's "unchanged problem" elimination, before and after the fix, on MATH Level 4-5 seeds.

Before: a child whose character similarity to its parent (difflib ratio on the whitespace-
normalized lower-case text) exceeded 0.95 was "unchanged", so a genuine constraint of a few words
added to a long Level 5 problem was thrown away. After: "unchanged" means the child adds no
content token at all (skymath.synth.methods.evol.is_unchanged): copies, reformattings, deletions.

The outputs are one evolution step per seed (the strategy the engine would pick) from the tiny
real model (SmolLM2-135M-Instruct, sampled at the recipe's temperature 0.7, or greedily with
--greedy as the demo decodes), RECORDED in bench/data/evol_tiny_l45[_greedy].jsonl so the
measurement is repeatable without a model; `--record` regenerates them (CPU: ~30 min on a busy
2-core machine). Both rules are applied to the same recorded outputs, with
everything else of the elimination unchanged.

The tiny model never writes near-copies (it leaks template words instead), so a second,
deterministic probe runs over ALL 3,994 Level 4-5 seeds: each seed plus one short genuine
constraint of the kind add_constraints asks for (a fixed list, chosen by seed), and each seed
merely reformatted (case, whitespace, a punctuation swap), which must stay "unchanged".

Usage: python bench/evol_unchanged.py [--seeds 48] [--greedy] [--record]
Last line: RESULT unchanged_before=<fraction> unchanged_after=<fraction> eliminated_before=<...>
eliminated_after=<...> n=<outputs> probe_added_rejected_before=<...> probe_added_rejected_after=<...>
probe_copies_rejected_before=<...> probe_copies_rejected_after=<...> probe_n=<seeds>
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RECORDED = REPO / "bench" / "data" / "evol_tiny_l45.jsonl"  # sampled at 0.7 (the recipe)
RECORDED_GREEDY = REPO / "bench" / "data" / "evol_tiny_l45_greedy.jsonl"  # greedy (the demo's setting)


def old_unchanged(parent: str, child: str) -> bool:
    """The rule before: equal, or difflib ratio > 0.95 on normalized text."""
    norm_p, norm_c = " ".join(parent.lower().split()), " ".join(child.lower().split())
    return norm_c == norm_p or difflib.SequenceMatcher(None, norm_p, norm_c).ratio() > 0.95


def prompts(n: int) -> list[dict]:
    from skymath.data.seeds import load_seeds
    from skymath.paths import default_data_root
    from skymath.prompts import render
    from skymath.synth.methods.evol import choose_strategy
    from skymath.synth.params import EVOL_STRATEGIES

    seeds = load_seeds(["math_train"], default_data_root(), levels=[4, 5], sample_seed=0, limit=n)
    weights = dict.fromkeys(EVOL_STRATEGIES, 1.0)
    out = []
    for s in seeds:
        strategy = choose_strategy(weights, s.id, 0, 1)
        prompt = render("synth/evol", problem=s.problem, strategy=strategy)
        out.append({"seed_id": s.id, "level": s.level, "strategy": strategy, "problem": s.problem,
                    "prompt_sha": hashlib.sha256(prompt.encode()).hexdigest()[:16], "prompt": prompt})
    return out


def record(items: list[dict], path: Path, greedy: bool, batch: int = 4, max_new_tokens: int = 128) -> None:
    import torch
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from skymath.models import tiny_model_dir

    torch.manual_seed(0)
    torch.set_num_threads(1)
    d = tiny_model_dir()
    tok = AutoTokenizer.from_pretrained(d)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in tqdm(range(0, len(items), batch), desc="tiny model", unit="batch", file=sys.stderr):
        chunk = items[i:i + batch]
        texts = [tok.apply_chat_template([{"role": "user", "content": it["prompt"]}], tokenize=False,
                                         add_generation_prompt=True) for it in chunk]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            sampling = {"do_sample": False} if greedy else {"do_sample": True, "temperature": 0.7}
            gen = model.generate(**enc, **sampling, max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id)
        for it, seq in zip(chunk, gen, strict=True):
            text = tok.decode(seq[enc["input_ids"].shape[1]:], skip_special_tokens=True)
            rows.append({k: it[k] for k in ("seed_id", "level", "strategy", "prompt_sha", "problem")} | {"output": text})
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


CONSTRAINTS = ("Assume all variables are positive integers.", "Express your answer as a common fraction.",
               "Give your answer modulo 1000.", "The answer must be an odd number.",
               "Round your answer to the nearest tenth.", "Assume the figure is drawn to scale.")


def probe() -> dict[str, float]:
    """Genuine one-sentence additions and pure reformattings of every Level 4-5 seed, judged by
    both rules (what the rule does when a model does add a constraint)."""
    from skymath.data.seeds import load_seeds
    from skymath.paths import default_data_root
    from skymath.synth.methods.evol import is_unchanged

    seeds = load_seeds(["math_train"], default_data_root(), levels=[4, 5])
    added_b = added_a = copies_b = copies_a = 0
    for i, s in enumerate(seeds):
        p = s.problem
        child = f"{p} {CONSTRAINTS[i % len(CONSTRAINTS)]}"
        added_b += old_unchanged(p, child)
        added_a += is_unchanged(p, child)
        copy = " ".join(p.upper().split()).replace(",", ";")
        copies_b += old_unchanged(p, copy)
        copies_a += is_unchanged(p, copy)
    n = max(1, len(seeds))
    return {"added_before": added_b / n, "added_after": added_a / n, "copies_before": copies_b / n,
            "copies_after": copies_a / n, "n": len(seeds)}


def main() -> None:
    from skymath.synth.methods.base import clean_problem
    from skymath.synth.methods.evol import added_content, elimination_reason, is_unchanged

    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=48)
    ap.add_argument("--record", action="store_true", help="regenerate the recorded outputs with the tiny model")
    ap.add_argument("--greedy", action="store_true", help="the greedy recording (the demo decodes greedily)")
    args = ap.parse_args()
    items = prompts(args.seeds)
    recorded = RECORDED_GREEDY if args.greedy else RECORDED
    if args.record or not recorded.exists():
        record(items, recorded, args.greedy)
    rows = [json.loads(line) for line in recorded.read_text(encoding="utf-8").splitlines() if line.strip()]
    by_seed = {it["seed_id"]: it for it in items}
    n = before_unch = after_unch = before_elim = after_elim = 0
    flipped = []
    by_strategy: dict[str, list[int]] = {}
    for r in rows:
        it = by_seed.get(r["seed_id"])
        if it is None or it["prompt_sha"] != r["prompt_sha"]:
            continue  # recorded for another prompt version: not this measurement
        n += 1
        child = clean_problem(r["output"])
        after = elimination_reason(r["problem"], child, 20, 0.3)
        old_u = bool(child) and old_unchanged(r["problem"], child)
        before = "unchanged problem" if old_u else after
        before_unch += before == "unchanged problem"
        after_unch += after == "unchanged problem"
        before_elim += before is not None
        after_elim += after is not None
        s = by_strategy.setdefault(r["strategy"], [0, 0, 0])
        s[0] += 1
        s[1] += before == "unchanged problem"
        s[2] += after == "unchanged problem"
        if old_u and not is_unchanged(r["problem"], child):
            flipped.append((r["seed_id"], r["strategy"], added_content(r["problem"], child)[:12]))
    print(f"{n} recorded tiny-model evolutions of MATH Level 4-5 seeds ({recorded.relative_to(REPO)})")
    print(f"{'strategy':<20} {'n':>4} {'unchanged before':>17} {'unchanged after':>16}")
    for k, (cnt, b, a) in sorted(by_strategy.items()):
        print(f"{k:<20} {cnt:>4} {b:>17} {a:>16}")
    print("kept now, 'unchanged' before (seed, strategy, added tokens):")
    for f in flipped[:10]:
        print("  ", f)
    d = max(1, n)
    pr = probe()
    print(f"probe over {pr['n']} Level 4-5 seeds: one genuine constraint added -> 'unchanged' "
          f"{pr['added_before']:.1%} before, {pr['added_after']:.1%} after; reformatted copies -> 'unchanged' "
          f"{pr['copies_before']:.1%} before, {pr['copies_after']:.1%} after")
    print(f"RESULT unchanged_before={before_unch / d:.3f} unchanged_after={after_unch / d:.3f} "
          f"eliminated_before={before_elim / d:.3f} eliminated_after={after_elim / d:.3f} n={n} "
          f"probe_added_rejected_before={pr['added_before']:.3f} probe_added_rejected_after={pr['added_after']:.3f} "
          f"probe_copies_rejected_before={pr['copies_before']:.3f} probe_copies_rejected_after={pr['copies_after']:.3f} "
          f"probe_n={pr['n']}")


if __name__ == "__main__":
    main()
