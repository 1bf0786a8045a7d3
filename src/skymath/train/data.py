"""SFT data: records -> the shared prompt (the one evaluation uses) -> tokens, labels -100 on the prompt.

The prompt and the target are tokenized separately and concatenated, so the mask boundary is
exact and the prompt tokens are the ones an evaluator sends. The target ends with EOS (masking by
position, not by pad id: SmolLM2's pad token IS its EOS). Samples longer than max_length are
truncated (cut at the end) or dropped, and counted. The tokenized dataset is cached with
`datasets.save_to_disk` under a key of tokenizer + template + max length + policy + input data.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skymath.prompts import sft_prompt, sft_target

log = logging.getLogger(__name__)

OK, TRUNCATED, DROPPED = 0, 1, 2
SENTINEL = "\x00PROBLEM\x00"


@dataclass(frozen=True)
class DataSettings:
    max_length: int = 2048
    truncation: str = "truncate"  # truncate | drop
    prompt_style: str = "alpaca"  # alpaca | chat


def encode(tokenizer: Any, problem: str, response: str, settings: DataSettings) -> tuple[list[int], list[int], int]:
    """(input_ids, labels, status) for one sample; status OK / TRUNCATED / DROPPED."""
    ids, labels, status = _encode_batch(tokenizer, [problem], [response], settings)
    return ids[0], labels[0], status[0]


def _encode_batch(tokenizer: Any, problems: Sequence[str], responses: Sequence[str],
                  s: DataSettings) -> tuple[list[list[int]], list[list[int]], list[int]]:
    prompts = [sft_prompt(p, style=s.prompt_style, tokenizer=tokenizer) for p in problems]
    targets = [sft_target(r) for r in responses]
    # alpaca: the tokenizer's own special tokens (BOS for LLaMA/Mistral); chat: the template has them
    p_ids = tokenizer(prompts, add_special_tokens=s.prompt_style == "alpaca")["input_ids"]
    t_ids = tokenizer(targets, add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    all_ids, all_labels, status = [], [], []
    for p, t in zip(p_ids, t_ids, strict=True):
        t = list(t) + ([eos] if eos is not None else [])
        ids = list(p) + t
        labels = [-100] * len(p) + t
        st = OK
        if len(ids) > s.max_length:
            if s.truncation == "drop" or len(p) >= s.max_length:
                st = DROPPED  # nothing of the response would be trained
            else:
                ids, labels, st = ids[: s.max_length], labels[: s.max_length], TRUNCATED
        all_ids.append(ids if st != DROPPED else [])
        all_labels.append(labels if st != DROPPED else [])
        status.append(st)
    return all_ids, all_labels, status


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """Content hash of the tokenizer (vocab + merges + special tokens), not its path."""
    h = hashlib.sha256(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        h.update(backend.to_str().encode())
    else:
        h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    h.update(repr((tokenizer.bos_token_id, tokenizer.eos_token_id, getattr(tokenizer, "chat_template", None))).encode())
    return h.hexdigest()[:16]


def template_fingerprint(tokenizer: Any, style: str) -> str:
    """Hash of the rendered prompt + target frame, so editing prompts/sft.jinja invalidates the cache."""
    text = sft_prompt(SENTINEL, style=style, tokenizer=tokenizer) + "|" + sft_target(SENTINEL)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def files_fingerprint(paths: Iterable[Path], max_samples: int | None = None) -> str:
    from skymath.records import sha256_file

    h = hashlib.sha256(repr(max_samples).encode())
    for p in paths:
        h.update(sha256_file(Path(p)).encode())
    return h.hexdigest()[:16]


def _fp(key: str, op: str) -> str:
    """A datasets fingerprint (<= 64 chars) for one operation on the keyed data."""
    return hashlib.sha256(f"{key}/{op}".encode()).hexdigest()[:32]


def cache_key(tokenizer: Any, settings: DataSettings, data_fp: str) -> str:
    parts = [tokenizer_fingerprint(tokenizer), template_fingerprint(tokenizer, settings.prompt_style),
             f"L{settings.max_length}", settings.truncation, data_fp]
    return "-".join(parts)


def load_pairs(paths: Sequence[Path], max_samples: int | None = None) -> tuple[list[str], list[str], int]:
    """(problems, responses, skipped) from record shards; records without a response are skipped."""
    from skymath.records import read_records

    problems: list[str] = []
    responses: list[str] = []
    skipped = 0
    for rec in read_records(list(paths)):
        if not rec.response or not rec.response.strip():
            skipped += 1
            continue
        problems.append(rec.problem)
        responses.append(rec.response)
        if max_samples is not None and len(problems) >= max_samples:
            break
    return problems, responses, skipped


def build_dataset(problems: Sequence[str], responses: Sequence[str], tokenizer: Any, settings: DataSettings,
                  cache_dir: Path, key: str, num_proc: int = 1, extra_stats: dict[str, Any] | None = None):
    """The tokenized dataset (columns input_ids, labels, length) and its stats, from cache if present.

    Written to `<cache_dir>/<key>.partial` and renamed, so a crash never leaves a half cache."""
    from datasets import Dataset, Features, Value, load_from_disk
    from datasets import Sequence as DSeq

    final = Path(cache_dir) / key
    if (final / "stats.json").exists():
        log.info("tokenized dataset cache hit: %s", final)
        return load_from_disk(str(final / "data")), json.loads((final / "stats.json").read_text())
    tmp = Path(cache_dir) / f"{key}.partial{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    raw = Dataset.from_dict({"problem": list(problems), "response": list(responses)})
    features = Features({"input_ids": DSeq(Value("int32")), "labels": DSeq(Value("int32")),
                         "length": Value("int32"), "status": Value("int8")})

    def fn(batch: dict[str, list]) -> dict[str, list]:
        ids, labels, status = _encode_batch(tokenizer, batch["problem"], batch["response"], settings)
        return {"input_ids": ids, "labels": labels, "length": [len(x) for x in ids], "status": status}

    ds = raw.map(fn, batched=True, batch_size=256, num_proc=num_proc if num_proc > 1 else None,
                 remove_columns=["problem", "response"], features=features, new_fingerprint=_fp(key, "map"),
                 cache_file_name=str(tmp / "map.arrow"), desc="tokenize")
    status = ds.data.column("status").to_numpy()
    lengths = ds.data.column("length").to_numpy()
    kept = status != DROPPED
    stats = {"samples": int(kept.sum()), "truncated": int((status == TRUNCATED).sum()),
             "dropped": int((status == DROPPED).sum()), "tokens": int(lengths[kept].sum()),
             "max_length": settings.max_length, "truncation": settings.truncation,
             "prompt_style": settings.prompt_style, "key": key, **(extra_stats or {})}
    ds = ds.filter(lambda st: [x != DROPPED for x in st], input_columns=["status"], batched=True,
                   cache_file_name=str(tmp / "filter.arrow"), new_fingerprint=_fp(key, "filter"))
    ds = ds.remove_columns(["status"])
    out = Path(cache_dir) / f"{key}.out{os.getpid()}"
    shutil.rmtree(out, ignore_errors=True)
    ds.save_to_disk(str(out / "data"))
    (out / "stats.json").write_text(json.dumps(stats, indent=1))  # last: marks the cache complete
    shutil.rmtree(tmp, ignore_errors=True)
    if final.exists():
        shutil.rmtree(final)
    os.replace(out, final)
    log.info("tokenized %d samples (%d truncated, %d dropped) -> %s", stats["samples"], stats["truncated"],
             stats["dropped"], final)
    return load_from_disk(str(final / "data")), stats
