"""The API key every LLM-using shard needs, checked in the submitting shell (jobs inherit it with
`--export=ALL`): the variable named by `llm.api_key_env` must be set (or `llm.api_key_file` be a
0600 file), and a container runtime with `--cleanenv` must be told to pass it by NAME (the
rendered job step copies it into APPTAINERENV_/SINGULARITYENV_). `--ping` sends one 1-token
request per endpoint and reports the HTTP status. Values are never printed."""

from __future__ import annotations

import json
import os
import re
import stat
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from skymath.preflight.jobs import JobRequest
from skymath.preflight.problems import Findings, join_stages

OPENAI_BASE_URL = "https://api.openai.com/v1"
LLM_KINDS = {"synth", "distractors", "verifier"}


def llm_stages(cfg: Any) -> list[str]:
    """Stages whose shards call the LLM API (synthesis, distractors, judges, API evaluation)."""
    out = []
    for name, spec in cfg.stages.items():
        p = spec.params
        if spec.kind in LLM_KINDS or (spec.kind == "hardness" and getattr(p, "method", "") == "judge") or (
                spec.kind == "eval" and getattr(p, "backend", "") == "openai"):
            out.append(name)
    return out


def _is_api(url: str) -> bool:
    from urllib.parse import urlparse

    host = urlparse(url).hostname or ""
    return host.endswith("openai.com") or host.endswith("azure.com")


def endpoints(cfg: Any) -> list[tuple[str, str]]:
    """(base_url, model) the run will call before any service starts; [] when a service stage serves it."""
    llm = cfg.llm
    if llm.endpoints:
        return [(e.base_url.rstrip("/"), e.model or llm.model) for e in llm.endpoints]
    if llm.service:
        return []
    return [(OPENAI_BASE_URL, llm.model)]


def needs_key(cfg: Any) -> bool:
    return any(_is_api(url) for url, _ in endpoints(cfg))


def check_api_key(cfg: Any, profile: Any, jobs: list[JobRequest], env: dict[str, str]) -> Findings:
    f = Findings()
    users = llm_stages(cfg)
    if not users:
        return f
    llm = cfg.llm
    who = join_stages(users)
    if not needs_key(cfg):
        f.note(f"LLM: {'service stage ' + llm.service if llm.service else 'self-hosted endpoints'} "
               "(no API key needed)")
        return f
    name = llm.api_key_env
    if llm.api_key_file is not None:
        path = Path(os.path.expandvars(str(llm.api_key_file))).expanduser()
        if not path.is_file():
            f.add("secrets", who, f"llm.api_key_file {path} does not exist", "create it (one line, the key) with mode 0600")
        elif stat.S_IMODE(path.stat().st_mode) & 0o077:
            f.add("secrets", who, f"llm.api_key_file {path} is readable by others "
                  f"(mode {stat.S_IMODE(path.stat().st_mode):04o}); every shard would refuse it", f"chmod 600 {path}")
    elif not env.get(name, "").strip():
        f.add("secrets", who, f"{name} (llm.api_key_env) is not set in this shell: every shard that calls the API "
              "would fail after its time in the queue", f"export {name}=... before submitting (jobs inherit it), "
              "or name a 0600 key file in llm.api_key_file")
    runtime = profile.container.runtime
    for job in jobs:
        if job.stage not in users:
            continue
        export = job.opt("--export")
        if export and export.upper() != "ALL" and name not in export.split(","):
            f.add("secrets", job.stage, f"the job is submitted with --export={export}: {name} does not reach it",
                  f"add {name} to --export, or drop the --export option from the profile's sbatch_extra")
        if runtime in ("apptainer", "singularity") and not _passed_into_container(job.text, name, runtime):
            f.add("secrets", job.stage, f"{runtime} runs with --cleanenv and the job step does not pass {name} into "
                  "the container", f"add {name} to container.env_pass in the cluster profile")
    return f


def _passed_into_container(script: str, name: str, runtime: str) -> bool:
    prefix = "SINGULARITYENV_" if runtime == "singularity" else "APPTAINERENV_"
    if prefix + name in script:
        return True
    for m in re.finditer(r"for _v in ([^;]*);", script):
        if name in m.group(1).split():
            return True
    return False


def ping(cfg: Any, env: dict[str, str], timeout: float = 30.0) -> Findings:
    """One 1-token chat request per endpoint; the HTTP status (never the key) is reported."""
    f = Findings()
    eps = endpoints(cfg)
    if not eps:
        f.note(f"--ping: the endpoints come from service stage {cfg.llm.service!r} at run time; nothing to ping now")
        return f
    key = env.get(cfg.llm.api_key_env, "").strip()
    if cfg.llm.api_key_file is not None:
        try:
            key = Path(os.path.expandvars(str(cfg.llm.api_key_file))).expanduser().read_text().strip()
        except OSError:
            key = ""
    who = join_stages(llm_stages(cfg)) or "-"
    for url, model in eps:
        status, detail = _one_request(url, model, key or "EMPTY", timeout)
        if status == 200:
            f.note(f"--ping {url} ({model}): HTTP 200")
        elif status == 429:
            f.note(f"--ping {url} ({model}): HTTP 429 (rate limited, but the key and model are accepted)")
        elif status is None:
            f.add("secrets", who, f"--ping {url}: no answer ({detail})",
                  "check the endpoint URL, the network/proxy of this host (HTTPS_PROXY) and of the compute nodes")
        elif status in (401, 403):
            f.add("secrets", who, f"--ping {url}: HTTP {status}, the key is refused ({detail})",
                  f"check the value of {cfg.llm.api_key_env} (or llm.api_key_file)")
        elif status == 404:
            f.add("secrets", who, f"--ping {url}: HTTP 404 for model {model!r} ({detail})",
                  "check llm.model (and the endpoint's model) and the base_url (ends in /v1)")
        else:
            f.add("secrets", who, f"--ping {url}: HTTP {status} ({detail})", "check the endpoint and llm.model")
    return f


def _one_request(base_url: str, model: str, key: str, timeout: float) -> tuple[int | None, str]:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}).encode()
    req = urllib.request.Request(f"{base_url.rstrip('/')}/chat/completions", data=body, method="POST",
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 - the configured endpoint
            return r.status, "ok"
    except urllib.error.HTTPError as e:
        try:
            text = e.read().decode("utf-8", "replace")
            msg = json.loads(text).get("error", {})
            detail = msg.get("message") if isinstance(msg, dict) else str(msg)
        except Exception:  # noqa: BLE001 - any body
            detail = e.reason
        detail = str(detail or e.reason).replace(key, "***") if key else str(detail)
        return e.code, detail[:160]
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        return None, str(getattr(e, "reason", e))[:160]
