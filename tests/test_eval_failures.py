"""Issue 17: a failed generation is never graded (an error is never a verdict).

Against the loopback OpenAI-compatible server with chosen requests failing PERMANENTLY: the
shards holding them fail with one line naming the count and the first reason (no `.done`, no
metrics); after the server recovers, `skymath resubmit` reruns only those shards, sends only the
failed requests again, and the merged metrics equal those of a run that never failed. Also: a
tolerated failure is counted (`failed: K`), not graded; the hf backend turns an exception into
failed items; an error finish reason is a failure.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml
from support.eval_faults import bench_items, eval_server, llm_block, openai_eval_stage, recover
from support.eval_run import eval_stage, make_run, run_stage

from skymath.evaluate.backends.base import Generation, generation_error
from skymath.executors.local import LocalExecutor
from skymath.pipeline.runner import prepare_run
from skymath.pipeline.status import collect_status


def _config(tmp_path, name: str, stage: dict, llm: dict) -> str:
    data = {"run": {"name": name, "root": str(tmp_path / "runs")}, "executor": {"max_parallel": 2, "poll_s": 0.1},
            "llm": llm, "stages": {"ev": stage}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _outputs(run) -> tuple[str, dict]:
    metrics = json.loads((run.stage_dir("ev") / "metrics.json").read_text())
    for k in ("stage", "label"):
        metrics.pop(k)
    return (run.stage_dir("ev") / "results.jsonl").read_text(), metrics


@pytest.mark.slow
def test_permanent_failures_fail_the_shard_then_resubmit_completes_it_exactly(tmp_path, data_root):
    items = bench_items(data_root, gsm8k=6, math=6)  # 4 shards of 3 items
    doomed = [1, 2, 9]  # shard 0 loses two items, shard 3 one
    with eval_server(items, doomed=doomed) as srv:
        stage = openai_eval_stage(4, gsm8k=6, math=6)
        run, cfg = prepare_run(_config(tmp_path, "flaky", stage, llm_block(srv)))
        assert LocalExecutor(run, cfg, quiet=True).launch() == 1

        st = {s.name: s for s in collect_status(run, cfg)}["ev"]
        assert st.indices("failed") == [0, 3] and st.indices("done") == [1, 2]
        err0, err3 = st.shards[0].error, st.shards[3].error
        assert "2 of 3 generations failed (first: request failed after 3 attempt(s): HTTP 500" in err0
        assert "1 of 3 generations failed" in err3 and "\n" not in err0 + err3  # one line each
        assert not (run.stage_dir("ev") / "metrics.json").exists()  # no score from a failed stage
        failed0 = [json.loads(x) for x in run.shard_path("ev", 0, ".failures.jsonl").read_text().splitlines()]
        assert [f["id"] for f in failed0] == [items[1]["id"], items[2]["id"]]
        # nothing failed was graded: the partial output holds exactly the one item that succeeded
        partial = run.shard_path("ev", 0, ".jsonl.partial").read_text().splitlines()
        assert [json.loads(x)["id"] for x in partial] == [items[0]["id"]]
        served_before = dict(srv.ok_bodies)
        assert len(served_before) == len(items) - len(doomed)

        recover(srv)
        r = subprocess.run([sys.executable, "-m", "skymath", "resubmit", str(run.root)],
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stdout + r.stderr
        # only the failed prompts were answered again; every successful one was sent exactly once
        assert sum(srv.ok_bodies.values()) == len(items)
        assert all(v == 1 for v in srv.ok_bodies.values())
        assert set(served_before) < set(srv.ok_bodies)

    with eval_server(items) as healthy:  # the reference: a run that never failed
        clean = make_run(tmp_path, "clean", {"ev": openai_eval_stage(1, gsm8k=6, math=6)}, llm=llm_block(healthy))
        run_stage(clean, "ev")
    results, metrics = _outputs(run)
    assert (results, metrics) == _outputs(clean)
    assert metrics["n"] == len(items) and metrics["failed"] == 0
    math = metrics["benchmarks"]["math"]["overall"]
    assert math["n"] == 6 and math["paper"] == math["strict"] == 0.5  # the scripted model: even indices right
    marker = run.read_marker(run.done_path("ev", 0))
    assert marker["failed"] == 0 and marker["resumed"] == 1 and marker["usage"]["failures"] == 2
    # token counts cover every graded record, whichever attempt generated it
    tokens = [sum(run.read_marker(run.done_path("ev", i))[k] for i in range(4)) for k in ("prompt_tokens", "completion_tokens")]
    ref = clean.read_marker(clean.done_path("ev", 0))
    assert tokens == [ref["prompt_tokens"], ref["completion_tokens"]] and tokens[1] > 0


def test_tolerated_failures_are_counted_never_graded(tmp_path, data_root):
    items = bench_items(data_root, gsm8k=2, math=2)
    with eval_server(items, doomed=[0, 3]) as srv:
        run = make_run(tmp_path, "tol", {"ev": openai_eval_stage(1, gsm8k=2, math=2, failure_tolerance=0.5),
                                         "report": {"kind": "report", "depends_on": ["ev"]}}, llm=llm_block(srv))
        run_stage(run, "ev")
    rows = [json.loads(x) for x in (run.stage_dir("ev") / "results.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [items[1]["id"], items[2]["id"]]  # the failed ones are not results
    metrics = json.loads((run.stage_dir("ev") / "metrics.json").read_text())
    assert metrics["n"] == 2 and metrics["failed"] == 2 and "HTTP 500" in metrics["first_failure"]
    g, m = metrics["benchmarks"]["gsm8k"]["overall"], metrics["benchmarks"]["math"]["overall"]
    assert (g["n"], g["failed"], m["n"], m["failed"]) == (1, 1, 1, 1)
    assert g["strict"] == 0.0 and m["strict"] == 1.0  # item 1 answered wrong, item 2 right: no failure counted wrong
    assert run.read_marker(run.done_path("ev", 0))["failed"] == 2
    run_stage(run, "report")
    md = (run.root / "report" / "report.md").read_text()
    assert "ev: 2 generation(s) failed and were not graded" in md
    overall = (run.root / "report" / "overall.csv").read_text().splitlines()
    header, row = overall[0].split(","), overall[1].split(",")
    assert row[header.index("gsm8k failed")] == "1" and row[header.index("math symbolic n")] == "1"


def test_error_finish_reasons_are_failures():
    assert generation_error(Generation(0, "", finish_reason="abort")) == "empty output (finish reason 'abort')"
    assert generation_error(Generation(0, "half an answ", finish_reason="error")).startswith("output cut by an error")
    assert generation_error(Generation(0, "", error="HTTP 429 rate limited")) == "HTTP 429 rate limited"
    for ok in (Generation(0, "The answer is 5", finish_reason="stop"), Generation(0, "", finish_reason="length"),
               Generation(0, "", finish_reason="stop")):  # a model may legitimately say nothing: graded wrong
        assert generation_error(ok) is None


@pytest.mark.slow
def test_hf_backend_exception_fails_items_then_rerun_matches(tmp_path, data_root, tiny_model, monkeypatch):
    """A batch whose generate raises (as a CUDA OOM would) fails its items; the rerun completes
    and the results equal an undisturbed run's."""
    from skymath.evaluate.backends.hf import HFBackend

    items = bench_items(data_root, gsm8k=2, math=1)
    doomed = items[1]["problem"]
    original = HFBackend._generate_batch

    def flaky(self, rows, ids_all, *args):
        if any(doomed[:60] in self.tokenizer.decode(ids_all[i]) for i in rows):
            raise RuntimeError("CUDA out of memory (injected)")
        return original(self, rows, ids_all, *args)

    stage = eval_stage(gsm8k=2, math=1, max_new_tokens=8, batch_size=1)
    run = make_run(tmp_path, "hf", {"ev": stage})
    monkeypatch.setattr(HFBackend, "_generate_batch", flaky)
    with pytest.raises(AssertionError, match="1 of 3 generations failed .first: RuntimeError: CUDA out of memory"):
        run_stage(run, "ev")
    assert not run.is_done("ev", 0)
    monkeypatch.setattr(HFBackend, "_generate_batch", original)
    run_stage(run, "ev")
    assert run.read_marker(run.done_path("ev", 0))["resumed"] == 2
    clean = make_run(tmp_path, "hfclean", {"ev": stage})
    run_stage(clean, "ev")
    assert _outputs(run) == _outputs(clean)


def test_fault_server_dooms_single_items(data_root):
    """The support server fails exactly the chosen items' requests, every time."""
    from skymath.config.llm import LLMConfig
    from skymath.evaluate.runner import build_prompt
    from skymath.synth.client import ChatRequest, LLMClient

    items = bench_items(data_root, gsm8k=3, math=3)
    with eval_server(items, doomed=[4]) as srv:
        client = LLMClient.from_config(LLMConfig(**llm_block(srv)))
        reqs = [ChatRequest(it["id"], [{"role": "user", "content": build_prompt(it["problem"], "alpaca")}])
                for it in items]
        res = client.run_batch(reqs)
        client.close()
    assert [r.ok for r in res] == [True, True, True, True, False, True]
    assert res[4].attempts == 3 and srv.on_request.failed == 3 and len(srv.ok_bodies) == 5


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_bug_report_scenario_on_the_local_slurm_cluster(tmp_path, data_root):
    """The issue's scenario, scaled down: an openai-backend eval stage in 8 shards on the real
    cluster, some requests rejected for good. The affected shards fail (Slurm FAILED, one line in
    the marker), nothing is merged; after the server recovers `skymath resubmit` reruns only them
    and the merged metrics equal those of a run that never failed."""
    from support.slurm_helpers import job_ids, make_executor, require_cluster, sacct_states, wait_jobs

    from skymath.pipeline import runner

    require_cluster()
    items = bench_items(data_root, gsm8k=8, math=8)  # 8 shards of 2 items
    doomed = [3, 10, 11]  # shards 1 and 5
    with eval_server(items, doomed=doomed, host="127.0.0.1") as srv:
        stage = openai_eval_stage(8, gsm8k=8, math=8)
        stage["resources"] = {"gpus": 1, "cpus": 1, "mem_gb": 2, "time": "00:15:00"}
        text = yaml.safe_dump({"run": {"name": "slurm8", "root": "@ROOT@"}, "llm": llm_block(srv), "stages": {"ev": stage}})
        run, cfg, ex = make_executor(tmp_path, text)
        assert ex.launch() == 0
        first = job_ids(run, reason="launch")
        wait_jobs(first, timeout_s=600)
        st = {s.name: s for s in runner.status(run, cfg)}["ev"]
        assert st.indices("failed") == [1, 5] and st.indices("done") == [0, 2, 3, 4, 6, 7]
        assert "1 of 2 generations failed (first: request failed after 3 attempt(s): HTTP 500" in st.shards[1].error
        assert "2 of 2 generations failed" in st.shards[5].error
        states = sacct_states(first, keys=[f"{first[0]}_{i}" for i in range(8)])
        assert states[f"{first[0]}_1"] == "FAILED" and states[f"{first[0]}_0"] == "COMPLETED"
        assert not (run.stage_dir("ev") / "metrics.json").exists()

        recover(srv)
        r = subprocess.run([sys.executable, "-m", "skymath", "resubmit", str(run.root), "--wait"],
                           capture_output=True, text=True, timeout=700)
        assert r.returncode == 0, r.stdout + r.stderr
        again = {e["stage"]: e for e in run.ledger() if e.get("reason") == "resubmit" and e.get("event") == "submit"}
        assert again["ev"]["shards"] == [1, 5]
        assert sum(srv.ok_bodies.values()) == len(items) and set(srv.ok_bodies.values()) == {1}

    with eval_server(items) as healthy:
        clean = make_run(tmp_path, "clean", {"ev": openai_eval_stage(1, gsm8k=8, math=8)}, llm=llm_block(healthy))
        run_stage(clean, "ev")
    assert _outputs(run) == _outputs(clean)
    assert _outputs(run)[1]["n"] == 16 and _outputs(run)[1]["failed"] == 0
