"""Test stage kind `support.synth_seeds`: emits seed records from a JSONL file of Record dicts.

Lighter than the real `seeds` stage (no `datasets` import) so synthesis tests stay fast; the
records themselves are real MATH / GSM8K problems (see synth_helpers.real_seeds).
"""

from __future__ import annotations

import json
from pathlib import Path

from skymath.stages import StageParams

KIND = "support.synth_seeds"
SHAPE = "cpu-single"


class Params(StageParams):
    file: str


def run(ctx) -> dict:
    rows = [json.loads(ln) for ln in Path(ctx.params.file).read_text(encoding="utf-8").splitlines() if ln.strip()]
    w = ctx.writer(resume=False)
    for r in ctx.my_slice(rows):
        w.write(r)
    return {"seeds": len(rows)}
