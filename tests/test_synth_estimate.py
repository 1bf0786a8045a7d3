"""`skymath estimate` on a real seed file: counts, token ranges and cost, with -o overrides."""

from __future__ import annotations

import json

from skymath.cli import main


def test_estimate_counts_requests_tokens_and_cost(tmp_path, capsys, data_root):
    cfg = tmp_path / "p.yaml"
    cfg.write_text(f"""
run: {{name: est, root: {tmp_path}/runs}}
data: {{root: {data_root}}}
llm: {{model: gpt-4}}
stages:
  seeds: {{kind: seeds, params: {{sources: [gsm8k_train], limit: 40}}}}
  synth: {{kind: synth, depends_on: [seeds], params: {{mix: {{metamath: 1, evol: 1, xwin: 2}}, max_tokens: 512}}}}
""")
    assert main(["estimate", str(cfg), "--json"]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    assert row["stage"] == "synth" and row["seeds"] == 40
    # 10 metamath seeds x 4 sub-methods (every GSM8K problem has numbers and a gold answer),
    # 10 evol trajectories, 20 xwin samples
    assert row["units"] == 40 + 10 + 20
    assert row["requests_low"] == 10 * (1 + 2 + 1 + 1) + 10 + 20
    assert row["requests_high"] == 10 * 5 + 10 * 2 * 5 + 20 * 2
    assert 0 < row["prompt_tokens_low"] <= row["prompt_tokens_high"]
    assert 0 < row["cost_low_usd"] < row["cost_high_usd"] and row["price_model"] == "gpt-4"
    assert main(["estimate", str(cfg), "-o", "stages.synth.params.max_seeds=8"]) == 0
    out = capsys.readouterr().out
    assert "synth" in out and "cost USD" in out and " 8 " in out
