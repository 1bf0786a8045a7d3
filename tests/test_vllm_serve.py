"""`vllm serve` for real as the `llm-server` service stage (the CPU build in `.venv-vllm`, started
ONCE for this module), and a synthesis stage against it that asks for `n = 2` samples per request
with several requests in flight, through the project's client (`skymath.synth.client.LLMClient`).

Checked: the server runs exactly the command line a GPU shard would run minus the GPU flags; the
client really sends `n` (requests at the server = what the shard marker counts, fewer than the
samples drawn) and counts every generated token exactly once (the server's own counter); the
server handles several requests at once (transformers serve cannot); and it stops when its
consumer is complete. A server that ignores `n` (one choice back) gets the missing sample asked
for alone, counted once too."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from support.fault_server import FaultServer
from support.synth_helpers import make_run, read_jsonl, real_seeds, start_service_worker, stop_service_worker

from skymath.worker import run_shard

pytestmark = pytest.mark.slow

SAMPLES = 2
PARAMS = {"mix": {"metamath": 1, "xwin": 1}, "mix_mode": "all", "match_gold": False, "drop_truncated": False,
          "few_shot": False, "max_tokens": 48, "min_problem_chars": 10, "min_length_ratio": 0.0,
          "metamath": {"samples": {"answer_aug": SAMPLES, "rephrase": SAMPLES}}, "xwin": {"samples": SAMPLES}}
SERVER = {"model": "tiny:smollm2", "server": "vllm", "max_model_len": 1024, "poll_s": 0.5}


def _metrics(base_url: str) -> dict[str, float]:
    """The server's Prometheus counters (summed over labels)."""
    root = base_url.rsplit("/v1", 1)[0]
    with urllib.request.urlopen(f"{root}/metrics", timeout=10) as r:  # noqa: S310 - 127.0.0.1
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(r"^(vllm:[a-z_]+?)(?:\{[^}]*\})? ([0-9.e+-]+)$", line)
        if m:
            out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(2))
    return out


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model):
    tmp = tmp_path_factory.mktemp("vllm-serve")
    run = make_run(tmp, real_seeds(1, 1), PARAMS,
                   {"service": "server", "n": SAMPLES, "concurrency": 4, "temperature": 0.7,
                    "timeout_s": 600, "endpoint_wait_s": 600},
                   extra_stages={"server": {"kind": "llm-server", "shape": "cpu-single", "params": SERVER},
                                 # a second consumer keeps the server up until the test has read its counters
                                 "synth-last": {"kind": "synth", "depends_on": ["seeds"], "services": ["server"],
                                                "params": {**PARAMS, "max_seeds": 1, "mix": {"metamath": 1},
                                                           "metamath": {"samples": {"answer_aug": 1}}}}},
                   services=["server"])
    proc = start_service_worker(run, "server", tmp / "server.log")
    path = run.service_dir("server") / "endpoint-0.json"
    deadline = time.monotonic() + 900
    while not path.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    yield run, proc, tmp
    stop_service_worker(run, "server", proc)


def test_vllm_serve_runs_the_gpu_command_line_minus_the_gpu_flags(served) -> None:
    from skymath.evaluate.backends.vllm import vllm_executable
    from skymath.stages.llm_server import VLLM_CPU_FLAGS, Params, render_command, vllm_serve_argv

    run, proc, tmp = served
    path = run.service_dir("server") / "endpoint-0.json"
    assert path.exists(), (tmp / "server.log").read_text(errors="replace")[-3000:]
    ep = json.loads(path.read_text())
    p = Params(**SERVER)
    gpu = vllm_serve_argv(p, gpus=4)  # what a shard with 4 GPUs runs on a cluster
    assert gpu[gpu.index("--tensor-parallel-size") + 1] == "4" and "--gpu-memory-utilization" in gpu
    stripped = [a for i, a in enumerate(gpu) if a not in ("--tensor-parallel-size", "--gpu-memory-utilization")
                and gpu[i - 1] not in ("--tensor-parallel-size", "--gpu-memory-utilization")]
    cpu = vllm_serve_argv(p, gpus=0)
    assert cpu == stripped + list(VLLM_CPU_FLAGS)
    values = {"model": ep["model"], "host": "127.0.0.1", "port": str(ep["port"]), "served_model_name": ep["model"],
              "shard": "0"}
    expected = render_command(cpu, values)
    expected[0] = vllm_executable()
    running = Path(f"/proc/{ep['pid']}/cmdline").read_bytes().decode().split("\0")[:-1]
    assert running[-len(expected):] == expected  # (after the script's interpreter)
    assert Path(expected[0]).resolve().parent.parent.name == ".venv-vllm"
    env = Path(f"/proc/{ep['pid']}/environ").read_bytes().decode().split("\0")
    assert "VLLM_CPU_KVCACHE_SPACE=1" in env  # the KV cache in GiB, not a fraction of host memory


def test_synthesis_with_n_samples_per_request_and_concurrent_requests(served) -> None:
    from skymath.config.llm import Endpoint
    from skymath.synth.client import ChatRequest, LLMClient

    run, proc, tmp = served
    ep = json.loads((run.service_dir("server") / "endpoint-0.json").read_text())
    cfg = run.load_config()
    direct = LLMClient.from_config(cfg.llm.model_copy(update={"service": None}),
                                   endpoints=[Endpoint(base_url=ep["base_url"], model=ep["model"])])
    msgs = [{"role": "user", "content": "Write a short sentence about the sea."}]
    pair = direct.run_batch([ChatRequest(f"s{i}", msgs, max_tokens=24, sample_index=i) for i in range(SAMPLES)])
    assert all(r.ok for r in pair) and direct.usage.requests == 1  # both samples from one request
    assert pair[0].text != pair[1].text  # two draws (temperature 0.7), not one answer twice
    direct.close()
    server_log = run.log_dir("server") / "server-00000.log"  # the server's own output (access log)
    posts_before = server_log.read_text(errors="replace").count("POST /v1/chat/completions")
    before = _metrics(ep["base_url"])
    running: list[float] = []
    done = threading.Event()

    def watch() -> None:  # requests in flight at the server while the shard runs
        while not done.is_set():
            try:
                running.append(_metrics(ep["base_url"]).get("vllm:num_requests_running", 0.0))
            except OSError:
                pass
            time.sleep(0.2)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    try:
        assert run_shard(run.root, "synth", 0) == 0
    finally:
        done.set()
        t.join(10)
    after = _metrics(ep["base_url"])
    marker = json.loads(run.done_path("synth", 0).read_text())
    usage = marker["usage"]
    units = read_jsonl(run.stage_dir("synth") / "shard-00000" / "units.jsonl")
    calls = sum(u["usage"]["requests"] for u in units)  # chat calls the methods made (one per sample)
    posts = server_log.read_text(errors="replace").count("POST /v1/chat/completions") - posts_before
    print(f"\nvllm serve synthesis: {calls} samples asked, {usage['requests']} HTTP requests, "
          f"{usage['completion_tokens']} completion tokens, max {max(running or [0]):.0f} sequences running")
    assert usage["failures"] == 0 and usage["cached"] == 0
    assert posts == usage["requests"]  # HTTP requests the server answered: each counted once
    assert usage["requests"] < calls  # n=2: sibling samples came out of one request
    firsts = [u for u in units if u["sub_method"] in ("answer_aug", "rephrase") or u["method"] == "xwin"]
    assert {u["sample_index"] for u in firsts} == set(range(SAMPLES))
    # the server's own count of generated tokens equals what the shard accounted: nothing counted
    # twice for the samples that shared a request, nothing missed
    served_tokens = after["vllm:generation_tokens_total"] - before.get("vllm:generation_tokens_total", 0.0)
    assert served_tokens == usage["completion_tokens"], (served_tokens, usage)
    assert max(running) > SAMPLES  # more than one request's samples at once: concurrent requests
    recs = read_jsonl(run.shard_path("synth", 0))
    by_unit = {(r["meta"]["seed_id"], r["method"], r["meta"]["sub_method"], r["meta"]["sample_index"]) for r in recs}
    assert len(by_unit) == len(recs) and all(u["records"] or u["rejected"] for u in units)
    assert run_shard(run.root, "synth-last", 0) == 0
    assert proc.wait(180) == 0  # every consumer is complete: the server stops by itself
    assert not (run.service_dir("server") / "endpoint-0.json").exists()


def test_a_server_that_ignores_n_gets_the_missing_sample_asked_alone(tmp_path) -> None:
    from skymath.config.llm import Endpoint, LLMConfig
    from skymath.synth.client import ChatRequest, LLMClient

    seen: list[int | None] = []
    with FaultServer(on_request=lambda i, body: seen.append(body.get("n"))) as srv:
        llm = LLMConfig(model=srv.model, n=2, temperature=0.7, max_retries=0)
        client = LLMClient.from_config(llm, cache_dir=tmp_path, endpoints=[Endpoint(base_url=srv.base_url)])
        msgs = [{"role": "user", "content": "What is 2+2?"}]
        reqs = [ChatRequest(f"s{i}", msgs, sample_index=i) for i in range(3)]
        res = client.run_batch(reqs)
        assert all(r.ok for r in res) and [r.key for r in res] == ["s0", "s1", "s2"]
        # group {0,1} asked with n=2 (one choice came back: 1 asked alone), group {2} with n=2
        assert sorted(seen, key=str) == sorted([2, None, 2], key=str) and srv.total == 3
        assert client.usage.requests == 3
        assert sum(r.usage["completion_tokens"] for r in res) == srv.usage_served["completion_tokens"]
        # a rerun is served by the cache: each sample under its own key
        again = LLMClient.from_config(llm, cache_dir=tmp_path, endpoints=[Endpoint(base_url=srv.base_url)])
        assert [r.text for r in again.run_batch(reqs)] == [r.text for r in res] and srv.total == 3
        client.close()
        again.close()
