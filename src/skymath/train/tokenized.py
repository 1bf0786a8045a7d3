"""The tokenized SFT dataset on disk: written once by CPU jobs, memory-mapped by every training rank.

Why: at paper scale (~1B tokens) tokenizing inside the training job keeps 8 GPUs idle for most of
an hour behind an NCCL barrier. The `tokenize` stage writes one *part* per shard; `sft` only maps
the parts (no rank tokenizes, no rank reads or hashes raw records).

One part (a directory):

    meta.json                    settings + fingerprints + counts (written LAST: marks it complete)
    train/tokens.bin             all token ids of the split, flat, little-endian int32
    train/offsets.npy            int64 [n+1]: sample i is tokens[offsets[i]:offsets[i+1]]
    train/prompt_lens.npy        int32 [n]: labels are -100 on the first prompt_lens[i] tokens
    val/...                      the held-out validation slice, same layout

Labels are not stored: they equal the tokens except -100 on the prompt (the exact mask of
`skymath.train.data.encode`), so the part costs 4 bytes per token plus 12 per sample. The offsets
are the packing index: a packed micro-batch is the concatenation of its samples' slices.

The validation slice is chosen per record by a hash of (seed, record id), so it is the same
whatever the number of tokenize shards and whether the data was tokenized by the stage or in
process.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from skymath.train.data import (
    DROPPED,
    TRUNCATED,
    DataSettings,
    encode_batch,
    template_fingerprint,
    tokenizer_fingerprint,
)

FORMAT = 1
META = "meta.json"
SPLITS = ("train", "val")
TOKEN_DTYPE = np.int32
BATCH = 512


def val_hash(record_id: str, seed: int = 0) -> float:
    """A uniform number in [0, 1) per record: the validation slice is the records below a threshold."""
    h = hashlib.sha256(f"{seed}:{record_id}".encode()).digest()
    return int.from_bytes(h[:8], "little") / 2**64


def is_val(record_id: str, threshold: float, seed: int = 0) -> bool:
    """Deterministic per-record choice of the validation slice (independent of sharding)."""
    return threshold > 0 and val_hash(record_id, seed) < threshold


@dataclass(frozen=True)
class Fingerprints:
    """What must match between the tokenized data and the training stage that reads it."""

    tokenizer: str
    template: str
    max_length: int
    truncation: str
    prompt_style: str

    @classmethod
    def of(cls, tokenizer: Any, settings: DataSettings) -> Fingerprints:
        return cls(tokenizer_fingerprint(tokenizer), template_fingerprint(tokenizer, settings.prompt_style),
                   settings.max_length, settings.truncation, settings.prompt_style)


class _SplitWriter:
    """Streams samples of one split into tokens.bin; offsets and prompt lengths stay in memory (12 B/sample)."""

    def __init__(self, d: Path) -> None:
        d.mkdir(parents=True, exist_ok=True)
        self.dir = d
        self.f = open(d / "tokens.bin", "wb")
        self.offsets = [0]
        self.prompt_lens: list[int] = []

    def add(self, ids: Sequence[int], prompt_len: int) -> None:
        self.f.write(np.asarray(ids, dtype=TOKEN_DTYPE).tobytes())
        self.offsets.append(self.offsets[-1] + len(ids))
        self.prompt_lens.append(prompt_len)

    def close(self) -> dict[str, int]:
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        np.save(self.dir / "offsets.npy", np.asarray(self.offsets, dtype=np.int64))
        np.save(self.dir / "prompt_lens.npy", np.asarray(self.prompt_lens, dtype=np.int32))
        return {"samples": len(self.prompt_lens), "tokens": int(self.offsets[-1])}


def write_part(pairs: Iterable[tuple[str, str, str]], tokenizer: Any, settings: DataSettings, out: Path,
               val_fraction: float = 0.0, seed: int = 0, extra: dict[str, Any] | None = None,
               progress: Any = None) -> dict[str, Any]:
    """Tokenize (record id, problem, response) triples into the part directory `out`.

    Written into `<out>.partial` and renamed, meta.json last: a crash never leaves a part that
    looks complete. Returns the meta (counts per split, truncated, dropped, fingerprints)."""
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    writers = {s: _SplitWriter(tmp / s) for s in SPLITS}
    counts = {"records": 0, "truncated": 0, "dropped": 0}

    def flush(batch: list[tuple[str, str, str]]) -> None:
        ids, labels, status = encode_batch(tokenizer, [b[1] for b in batch], [b[2] for b in batch], settings)
        for (rid, _, _), x, y, st in zip(batch, ids, labels, status, strict=True):
            counts["records"] += 1
            if st == DROPPED:
                counts["dropped"] += 1
                continue
            counts["truncated"] += st == TRUNCATED
            prompt_len = y.count(-100)  # labels are -100 exactly on the (possibly cut) prompt
            writers["val" if is_val(rid, val_fraction, seed) else "train"].add(x, prompt_len)
        if progress is not None:
            progress.update(len(batch))

    batch: list[tuple[str, str, str]] = []
    for triple in pairs:
        batch.append(triple)
        if len(batch) >= BATCH:
            flush(batch)
            batch = []
    if batch:
        flush(batch)
    split_counts = {s: w.close() for s, w in writers.items()}
    meta = {"format": FORMAT, "fingerprints": asdict(Fingerprints.of(tokenizer, settings)),
            "val_fraction": val_fraction, "seed": seed, **counts,
            "train_samples": split_counts["train"]["samples"], "train_tokens": split_counts["train"]["tokens"],
            "val_samples": split_counts["val"]["samples"], "val_tokens": split_counts["val"]["tokens"],
            "skipped_no_response": int(getattr(pairs, "skipped", 0)), **(extra or {})}
    (tmp / META).write_text(json.dumps(meta, indent=1) + "\n")
    old = out.with_name(out.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)
    return meta


def read_meta(part: Path) -> dict[str, Any] | None:
    try:
        return json.loads((Path(part) / META).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


class TokenizedSplit:
    """One split (train or val) of several parts, memory-mapped, as a map-style dataset.

    Item i -> {"input_ids", "labels"} as int64 numpy arrays. `limit` keeps the first N samples
    (in part order). Picklable: the maps are (re)opened lazily in each process."""

    def __init__(self, parts: Sequence[Path], split: str, limit: int | None = None) -> None:
        self.parts = [Path(p) for p in parts]
        self.split = split
        counts = []
        self._lengths: list[np.ndarray] = []
        for p in self.parts:
            off = np.load(p / split / "offsets.npy")
            counts.append(len(off) - 1)
            self._lengths.append(np.diff(off))
        self._starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        total = int(self._starts[-1])
        self.n = total if limit is None else min(total, limit)
        self._maps: list[tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_maps": None}

    def _open(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        if self._maps is None:
            maps = []
            for p in self.parts:
                d = p / self.split
                size = (d / "tokens.bin").stat().st_size
                toks = (np.memmap(d / "tokens.bin", dtype=TOKEN_DTYPE, mode="r") if size
                        else np.zeros(0, dtype=TOKEN_DTYPE))
                maps.append((toks, np.load(d / "offsets.npy", mmap_mode="r"), np.load(d / "prompt_lens.npy")))
            self._maps = maps
        return self._maps

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        if not 0 <= i < self.n:
            raise IndexError(i)
        k = int(np.searchsorted(self._starts, i, side="right")) - 1
        j = i - int(self._starts[k])
        toks, off, plen = self._open()[k]
        ids = np.asarray(toks[int(off[j]):int(off[j + 1])], dtype=np.int64)
        labels = ids.copy()
        labels[: int(plen[j])] = -100
        return {"input_ids": ids, "labels": labels}

    @property
    def lengths(self) -> list[int]:
        """Sample lengths in dataset order (for length-grouped sampling without reading tokens)."""
        if not self._lengths:
            return []
        return np.concatenate(self._lengths)[: self.n].tolist()

    @property
    def tokens(self) -> int:
        return int(sum(self.lengths))


def check_parts(parts: Sequence[Path], expected: Fingerprints, where: str) -> list[dict[str, Any]]:
    """The metas of all parts; a UserError naming the first setting that differs from `expected`."""
    from skymath.errors import UserError

    metas = []
    want = asdict(expected)
    for p in parts:
        meta = read_meta(p)
        if meta is None or meta.get("format") != FORMAT:
            raise UserError(f"{where}: {p} is not a complete tokenized part (format {FORMAT}); rerun its tokenize stage")
        got = meta.get("fingerprints", {})
        for k, v in want.items():
            if got.get(k) != v:
                raise UserError(f"{where}: {p} was tokenized with {k}={got.get(k)!r} but this stage needs {v!r}; "
                                f"remove that stage's outputs and rerun it")
        metas.append(meta)
    return metas


def sum_counts(metas: Sequence[dict[str, Any]]) -> dict[str, int]:
    keys = ("records", "truncated", "dropped", "train_samples", "train_tokens", "val_samples", "val_tokens",
            "skipped_no_response")
    return {k: int(sum(int(m.get(k, 0) or 0) for m in metas)) for k in keys}
