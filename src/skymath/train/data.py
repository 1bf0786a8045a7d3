"""SFT data: records -> the shared prompt (the one evaluation uses) -> tokens, labels -100 on the prompt.

The prompt and the target are tokenized separately and concatenated, so the mask boundary is
exact and the prompt tokens are the ones an evaluator sends. The target ends with EOS (masking by
position, not by pad id: SmolLM2's pad token IS its EOS). Samples longer than max_length are
truncated (cut at the end) or dropped, and counted. `skymath.train.tokenized` writes the result
to disk for the training ranks to memory-map.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skymath.prompts import sft_prompt, sft_target

OK, TRUNCATED, DROPPED = 0, 1, 2
SENTINEL = "\x00PROBLEM\x00"


@dataclass(frozen=True)
class DataSettings:
    max_length: int = 2048
    truncation: str = "truncate"  # truncate | drop
    prompt_style: str = "alpaca"  # alpaca | chat


def encode(tokenizer: Any, problem: str, response: str, settings: DataSettings) -> tuple[list[int], list[int], int]:
    """(input_ids, labels, status) for one sample; status OK / TRUNCATED / DROPPED."""
    ids, labels, status = encode_batch(tokenizer, [problem], [response], settings)
    return ids[0], labels[0], status[0]


_ENCODED = [0]  # samples this process has tokenized (the sft logs it: 0 on every training rank)


def encoded_samples() -> int:
    return _ENCODED[0]


def encode_batch(tokenizer: Any, problems: Sequence[str], responses: Sequence[str],
                 s: DataSettings) -> tuple[list[list[int]], list[list[int]], list[int]]:
    """(input_ids, labels, status) per sample, prompts and targets tokenized in one batch call each."""
    _ENCODED[0] += len(problems)
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


class RecordPairs:
    """(record id, problem, response) of record shards, in file order; counts records without a response."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)
        self.skipped = 0

    def __iter__(self) -> Iterator[tuple[str, str, str]]:
        from skymath.records import read_records

        for rec in read_records(self.paths):
            if not rec.response or not rec.response.strip():
                self.skipped += 1
                continue
            yield rec.id, rec.problem, rec.response
