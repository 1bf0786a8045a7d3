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
    assert row["requests_low"] < row["requests_expected"] < row["requests_high"]
    # every record a method can yield: an Evol chain up to max_steps (5) records, not one
    assert row["records_max"] == 40 + 10 * 5 + 20
    y = row["yields"]
    q = y["evol.evolve"] * y["evol.answer"]
    expected = (10 * (y["metamath.answer_aug"] + y["metamath.rephrase"] + y["metamath.fobar"]
                      + y["metamath.self_verification"]) + 10 * sum(q ** d for d in range(1, 6))
                + 20 * y["xwin.refine"] * y["xwin.answer"])
    assert row["records_expected"] == round(expected)
    assert 0 < row["prompt_tokens_low"] <= row["prompt_tokens_expected"] <= row["prompt_tokens_high"]
    assert 0 < row["cost_low_usd"] <= row["cost_expected_usd"] < row["cost_high_usd"]
    assert row["price_model"] == "gpt-4" and row["prices_as_of"]
    assert main(["estimate", str(cfg), "-o", "stages.synth.params.max_seeds=8"]) == 0
    out = capsys.readouterr().out
    assert "synth" in out and "cost USD" in out and " 8 " in out and "assumed acceptance" in out
    # a target: the per-seed counts are scaled so that the expected records reach it
    assert main(["estimate", str(cfg), "--json", "-o", "stages.synth.params.target_records=1000"]) == 0
    t = json.loads(capsys.readouterr().out)[0]
    assert abs(t["records_expected"] - 1000) <= 5 and t["scale"] > 1 and t["target_records"] == 1000


def test_paper_presets_expect_the_papers_counts_at_the_papers_price(capsys):
    """The presets: ~2.1M normal and ~0.4M hard records, priced at GPT-4-1106-preview."""
    from skymath.paths import REPO_ROOT

    assert main(["estimate", str(REPO_ROOT / "launch" / "skywork-mistral-7b.yaml"), "--json"]) == 0
    rows = {r["stage"]: r for r in json.loads(capsys.readouterr().out)}
    normal, hard = rows["synth-normal"], rows["synth-hard"]
    assert abs(normal["records_expected"] - 2_100_000) < 21_000 and normal["target_records"] == 2_100_000
    assert abs(hard["records_expected"] - 400_000) < 4_000 and hard["seeds"] == 3994
    assert not normal["scale_capped"] and not hard["scale_capped"]
    for r in (normal, hard):
        assert r["price_model"] == "gpt-4-1106-preview"
        assert r["records_max"] > r["records_expected"]  # Evol chains: up to max_steps records each
        assert 0 < r["cost_low_usd"] < r["cost_expected_usd"] < r["cost_high_usd"]
