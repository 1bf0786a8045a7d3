"""The API key: only from an environment variable or a 0600 key file named in the config.

The key is held in memory by the client and never written anywhere (records, cache, logs,
markers); `redact` scrubs it from any error text before that text is stored.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from skymath.errors import UserError

PLACEHOLDER_KEY = "EMPTY"  # self-hosted servers (vLLM, transformers serve) accept any key


def load_api_key(api_key_env: str, api_key_file: Path | None, needs_key: bool) -> str:
    """Read the key; a key file readable by group/others is refused (it would leak on shared clusters)."""
    if api_key_file is not None:
        path = Path(api_key_file).expanduser()
        if not path.is_file():
            raise UserError(f"llm.api_key_file: {path} not found")
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise UserError(f"llm.api_key_file: {path} has mode {mode:04o}; run `chmod 600 {path}`")
        key = path.read_text(encoding="utf-8").strip()
        if not key:
            raise UserError(f"llm.api_key_file: {path} is empty")
        return key
    key = os.environ.get(api_key_env, "").strip()
    if key:
        return key
    if needs_key:
        raise UserError(f"llm.api_key_env: environment variable {api_key_env} is not set "
                        "(or name a 0600 file in llm.api_key_file)")
    return PLACEHOLDER_KEY


def redact(text: str, key: str | None) -> str:
    """Replace the key (and its common 'Bearer' form) in text by ***."""
    if not text or not key or key == PLACEHOLDER_KEY or len(key) < 4:
        return text
    return text.replace(key, "***")
