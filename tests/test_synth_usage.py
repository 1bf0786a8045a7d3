"""Every stage that calls an API reports what it used: the worker puts the usage of every LLM client
a shard created into its `.done` marker when the stage did not report it (here: the hardness and
verifier judges, whose own code says nothing about usage)."""

from __future__ import annotations

from support.hygiene_judge import judge_server, llm_config
from support.hygiene_run import SOURCE, make_run, put_records, run_shard

from skymath.records import Record


def test_judge_stages_report_usage_in_their_markers(tmp_path):
    recs = [Record(id=f"h{i}", problem=f"Problem {i} [rate=7] [verdict=correct]: find x.", response="x = 2",
                   answer="2") for i in range(3)]
    with judge_server(schedule=["500"]) as srv:  # one retried request: requests count attempts
        run = make_run(tmp_path, {"synth": SOURCE,
                                  "hard": {"kind": "hardness", "depends_on": ["synth"],
                                           "params": {"method": "judge", "min_rating": 5}},
                                  "ver": {"kind": "verifier", "depends_on": ["synth"]}},
                       {"llm": {**llm_config(srv)["llm"], "model": "gpt-4-1106-preview",
                                "endpoints": [{"base_url": srv.base_url}]}})  # served as the paper's model
        put_records(run, "synth", 0, recs)
        assert run_shard(run, "hard") == 0
        hard_total, hard_usage = srv.total, dict(srv.usage_served)
        assert run_shard(run, "ver") == 0
    for stage, sent, served in (("hard", hard_total, hard_usage),
                                ("ver", srv.total - hard_total,
                                 {k: srv.usage_served[k] - hard_usage[k] for k in hard_usage})):
        u = run.read_marker(run.done_path(stage, 0))["usage"]
        assert u["requests"] == sent and u["succeeded"] == 3
        assert (u["api_prompt_tokens"], u["api_completion_tokens"]) == (served["prompt_tokens"],
                                                                        served["completion_tokens"])
        assert u["cost_usd"] == round((served["prompt_tokens"] * 10 + served["completion_tokens"] * 30) / 1e6, 6)
