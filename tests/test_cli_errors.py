"""Bad input, as a new user types it: every case is ONE line on stderr (`skymath: error: ...`) with
exit code 2 (or the right behaviour), no traceback, and no stray files left behind.

One table; each row runs the real CLI entry point (`skymath.cli.main`) in a fresh directory and
compares the directory tree before and after.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from skymath.cli import main as cli_main

GOOD = """\
run: {{name: t, root: {root}}}
executor: {{max_parallel: 2, poll_s: 0.1}}
stages:
  gen:
    kind: support.stage_emit
    num_shards: 2
    params: {{records_per_shard: 2{extra}}}
  after:
    kind: support.stage_collect
    depends_on: [gen]
"""


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _setup(tmp: Path) -> None:
    runs = tmp / "runs"
    (tmp / "good.yaml").write_text(GOOD.format(root=runs, extra=""))
    (tmp / "fails.yaml").write_text(GOOD.format(root=runs, extra=", fail_shards: [1], fail_once: false"))
    (tmp / "typo.yaml").write_text(GOOD.format(root=runs, extra="").replace("num_shards: 2", "num_shard: 2"))
    (tmp / "malformed.yaml").write_text(GOOD.format(root=runs, extra="").replace("num_shards: 2", "num_shards: 2: 3"))
    (tmp / "binary.yaml").write_bytes(bytes(range(256)) * 4)
    (tmp / "latin1.yaml").write_bytes("run: {name: caf\xe9}\n".encode("latin-1"))
    (tmp / "empty.yaml").write_text("")
    (tmp / "nostages.yaml").write_text("run: {name: x}\n")
    (tmp / "confdir").mkdir()
    (tmp / "afile").write_text("not a directory\n")
    (tmp / "binary.jsonl").write_bytes(bytes(range(256)) * 40)
    (tmp / "notjson.jsonl").write_text("hello\nworld\n")
    (tmp / "in.jsonl").write_text(
        json.dumps({"problem": "What is two plus two?", "response": "Four."}) + "\n"
        + '{"problem": "broken line\n'  # a corrupt line: quarantined, not fatal
        + json.dumps({"problem": "How many legs has a cat?", "response": "Four."}) + "\n")


@dataclass
class Case:
    name: str
    argv: list[str]
    rc: int = 2
    expect: list[str] = field(default_factory=list)  # substrings of the one stderr line (rc 2) or of stdout
    new_files: list[str] = field(default_factory=list)  # files the case may create (prefixes)
    no_slurm: bool = False
    before: list[list[str]] = field(default_factory=list)  # commands run first (must exit 0)


CASES = [
    Case("malformed-yaml", ["plan", "{tmp}/malformed.yaml"], expect=["malformed.yaml:", "malformed YAML"]),
    Case("unknown-key", ["run", "{tmp}/typo.yaml"], expect=["typo.yaml:", "stages.gen.num_shard", "did you mean"]),
    Case("unknown-override", ["run", "{tmp}/good.yaml", "-o", "runn.name=x"], expect=["runn", "unknown key"]),
    Case("missing-config", ["run", "{tmp}/nope.yaml"], expect=["nope.yaml: config file not found"]),
    Case("directory-config", ["run", "{tmp}/confdir"], expect=["confdir: is a directory"]),
    Case("binary-config", ["run", "{tmp}/binary.yaml"], expect=["binary.yaml: not a YAML text file"]),
    Case("latin1-config", ["plan", "{tmp}/latin1.yaml"], expect=["latin1.yaml:1: not a YAML text file", "UTF-8"]),
    Case("empty-config", ["run", "{tmp}/empty.yaml"], expect=["empty.yaml: the config is empty"]),
    Case("no-stages", ["run", "{tmp}/nostages.yaml"], expect=["no stages defined"]),
    Case("unwritable-run-root", ["run", "{tmp}/good.yaml", "-o", "run.root={tmp}/afile/runs"],
         expect=["run.root", "cannot create the run directory", "Not a directory"]),
    Case("stage-typo-local", ["run", "{tmp}/good.yaml", "--stage", "gne"],
         expect=["--stage gne: no such stage", "did you mean 'gen'"]),
    Case("stage-typo-local-dry", ["run", "{tmp}/good.yaml", "--stage", "nope", "--dry-run"],
         expect=["--stage nope: no such stage"]),
    Case("stage-typo-slurm", ["run", "{tmp}/good.yaml", "--executor", "slurm", "--stage", "gne"],
         expect=["--stage gne: no such stage"]),
    Case("stage-typo-submitit", ["run", "{tmp}/good.yaml", "--executor", "submitit", "--stage", "gne"],
         expect=["--stage gne: no such stage"]),
    Case("slurm-without-cluster", ["run", "{tmp}/good.yaml", "--executor", "slurm"], no_slurm=True,
         expect=["--executor slurm: no Slurm cluster here", "--executor local"]),
    Case("submitit-without-cluster", ["run", "{tmp}/good.yaml", "--executor", "submitit"], no_slurm=True,
         expect=["--executor submitit: no Slurm cluster here"]),
    Case("submitit-removed", ["run", "{tmp}/good.yaml", "--executor", "submitit"],
         expect=["submitit executor was removed", "--executor slurm"]),
    Case("status-not-a-run", ["status", "{tmp}/confdir"], expect=["not a run directory"]),
    Case("status-json-and-watch", ["status", "{tmp}/runs/t", "--json", "--watch"],
         before=[["run", "{tmp}/good.yaml", "--stage", "gen"]], new_files=["runs"], expect=["choose one"]),
    Case("decontam-missing-input", ["decontam", "{tmp}/nope.jsonl", "--out", "{tmp}/out"],
         expect=["nope.jsonl: input file not found"]),
    Case("decontam-binary-input", ["decontam", "{tmp}/binary.jsonl", "--out", "{tmp}/out"],
         expect=["binary.jsonl: not a JSONL text file"]),
    Case("decontam-not-jsonl", ["decontam", "{tmp}/notjson.jsonl", "--out", "{tmp}/out"],
         expect=["notjson.jsonl: no valid JSON line"]),
    Case("decontam-out-is-a-file", ["decontam", "{tmp}/in.jsonl", "--out", "{tmp}/afile"],
         expect=["afile: exists and is not a directory"]),
    # right behaviour rather than an error
    Case("decontam-corrupt-line-quarantined", ["decontam", "{tmp}/in.jsonl", "--out", "{tmp}/out"], rc=0,
         expect=["kept 2", "quarantined 1 bad line(s)", "out/quarantine.jsonl"],
         new_files=["out"]),
    Case("dry-run-freezes-nothing", ["run", "{tmp}/good.yaml", "--dry-run", "-o", "stages.gen.num_shards=3"], rc=0,
         before=[["run", "{tmp}/good.yaml", "--dry-run"]], expect=["gen: kind=support.stage_emit shards to run [0, 1, 2]"]),
    Case("dry-run-after-a-real-run", ["run", "{tmp}/good.yaml", "--dry-run", "-o", "stages.gen.num_shards=3"], rc=0,
         before=[["run", "{tmp}/good.yaml", "--stage", "gen"]], new_files=["runs"],
         expect=["shards to run [2]", "needs --reconfigure"]),
    Case("failed-shard-names-log-and-reconfigure", ["run", "{tmp}/fails.yaml", "--no-watch"], rc=1,
         new_files=["runs"], expect=["gen[1] FAILED", "logs/gen/shard-00001.log", "skymath resubmit",
                                     "skymath run CONFIG --reconfigure"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_table(case: Case, tmp_path, capfd, monkeypatch):
    _setup(tmp_path)
    monkeypatch.chdir(tmp_path)
    fill = [[a.replace("{tmp}", str(tmp_path)) for a in argv] for argv in case.before]
    for argv in fill:
        assert cli_main(argv) == 0, (argv, capfd.readouterr())
    capfd.readouterr()
    before = _files(tmp_path)
    if case.no_slurm:
        monkeypatch.setenv("PATH", str(Path(sys.executable).parent))  # no sbatch/squeue/srun here
    try:
        rc = cli_main([a.replace("{tmp}", str(tmp_path)) for a in case.argv])
    except SystemExit as e:  # argparse
        rc = e.code
    out, err = capfd.readouterr()
    assert rc == case.rc, (rc, out, err)
    assert "Traceback" not in err + out
    if case.rc == 2:
        assert err.startswith("skymath: error: ") and err.count("\n") == 1, err
        assert err.rstrip("\n").count("\n") == 0
    text = err if case.rc == 2 else out + err
    for part in case.expect:
        assert part.replace("{tmp}", str(tmp_path)) in text, (part, text)
    # no stray files: only what the case may create (never temp files, never beside the input)
    new = _files(tmp_path) - before
    stray = [f for f in new if not any(f == p or f.startswith(p + os.sep) for p in case.new_files)]
    assert not stray, stray
    assert not [f for f in _files(tmp_path) if ".tmp" in f], _files(tmp_path)
    if case.name == "decontam-corrupt-line-quarantined":
        summary = json.loads((tmp_path / "out" / "summary.json").read_text())
        assert summary["quarantined"] == 1 and summary["kept"] == 2
        (bad,) = [json.loads(x) for x in (tmp_path / "out" / "quarantine.jsonl").read_text().splitlines()]
        assert bad["line"] == 2 and bad["file"].endswith("in.jsonl") and "invalid JSON" in bad["reason"]
        assert not list(tmp_path.glob("*.bad.jsonl"))  # nothing written beside the input
    if case.name == "dry-run-freezes-nothing":
        assert not (tmp_path / "runs").exists()


def test_status_json_into_a_closed_pipe_is_quiet(tmp_path):
    """`skymath status RUN --json | head -c 100`: no BrokenPipeError traceback."""
    runs = tmp_path / "runs"
    cfg = tmp_path / "big.yaml"
    cfg.write_text(GOOD.format(root=runs, extra="").replace("num_shards: 2", "num_shards: 2000"))
    assert cli_main(["run", str(cfg), "--dry-run"]) == 0
    from skymath.pipeline.runner import prepare_run

    prepare_run(cfg)  # freeze only: 2,000 missing shards make a JSON far larger than a pipe buffer
    p = subprocess.Popen([sys.executable, "-m", "skymath", "status", str(runs / "t"), "--json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    head = p.stdout.read(100)
    p.stdout.close()  # the reader leaves, like `head`
    err = p.stderr.read().decode()
    rc = p.wait(timeout=120)
    assert head.startswith(b"[")
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert err == "" and rc == 141
