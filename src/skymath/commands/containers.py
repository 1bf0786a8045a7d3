"""`skymath containers build|check`: build the Apptainer images and verify them on the cluster.

`build` prints the exact commands (APPTAINER_TMPDIR/CACHEDIR on scratch, `apptainer build
--fakeroot IMAGE containers/KIND.def`, or `singularity build --remote`) and runs them with
`--run`. `check` runs on the cluster: each image exists, skymath imports inside it at the
checkout's version, and `--nv` sees GPUs for images used by GPU shapes.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from skymath.containers import DEFAULT_KIND_FOR_SHAPE, IMAGE_KINDS
from skymath.errors import UserError

KINDS = IMAGE_KINDS


@dataclass
class ProfileView:
    """The few cluster-profile values containers need (from skymath.config.cluster)."""

    name: str | None
    runtime: str
    images: dict[str, str]  # shape (or "default") -> image path
    scratch: str | None
    python: str


def load_view(profile: str | None) -> ProfileView:
    if not profile:
        return ProfileView(None, "apptainer", {}, None, "python3")
    from skymath.config.cluster import load_profile

    p = load_profile(profile)
    # runtime none runs the submitting interpreter (as the Slurm templates do); images have python3
    python = p.python or (sys.executable if p.container.runtime == "none" else "python3")
    return ProfileView(p.name, p.container.runtime, dict(p.container.images), p.scratch, python)


def _shapes_of(view: ProfileView) -> dict[str, list[str]]:
    """image path -> the job shapes that use it."""
    from skymath.containers import SHAPES

    out: dict[str, list[str]] = {}
    for shape in SHAPES:
        img = view.images.get(shape) or view.images.get("default")
        if img:
            out.setdefault(img, []).append(shape)
    return out


def image_path(view: ProfileView, kind: str, repo_root: Path) -> tuple[str, list[str]]:
    """Where the KIND image goes: the profile image whose file name mentions KIND; else the image
    of the shapes KIND serves by default (synth: cpu-*, eval: gpu-array, train: gpu-multinode)
    unless its name mentions another kind; else skymath-KIND.sif beside the profile's images
    (or in containers/images without a profile)."""
    by_image = _shapes_of(view)
    for img, shapes in by_image.items():
        if kind in Path(img).name:
            return img, shapes
    for img, shapes in by_image.items():
        named_other = any(k in Path(img).name for k in KINDS if k != kind)
        if not named_other and any(DEFAULT_KIND_FOR_SHAPE[s] == kind for s in shapes):
            return img, shapes
    folder = str(Path(next(iter(by_image))).parent) if by_image else str(repo_root / "containers" / "images")
    return f"{folder}/skymath-{kind}.sif", []


def def_file_sources(def_path: Path) -> list[str]:
    """The host paths a definition file's %files section copies (relative to the build directory)."""
    sources: list[str] = []
    section = None
    for raw in def_path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line.startswith("%"):
            section = line[1:].split()[0].lower() if len(line) > 1 else None
            continue
        if section == "files" and line and not line.startswith("#"):
            sources.append(shlex.split(line)[0])
    return sources


def build_script(
    view: ProfileView, kinds: list[str], *, runtime: str, remote: bool, notest: bool, force: bool, repo_root: Path
) -> tuple[str, list[str]]:
    """The shell script that builds the images, and notes for the user (missing %files sources)."""
    from skymath.containers import _check_profile_value, _quote_vars

    if remote and runtime != "singularity":
        raise UserError(
            "containers build --remote: Apptainer has no remote builder (SingularityCE's Sylabs builder "
            "only); build with --fakeroot on a build node, or use --runtime singularity after "
            "`singularity remote login`"
        )
    prefix = "SINGULARITY" if runtime == "singularity" else "APPTAINER"
    if view.scratch:
        base = _quote_vars(_check_profile_value(view.scratch.rstrip("/") + "/apptainer", "scratch"))
    else:
        base = '"${SCRATCH:-/tmp/$USER}/skymath-apptainer"'
    lines = [
        "set -euo pipefail",
        f"cd {shlex.quote(str(repo_root))}",
        "# layers and the build sandbox go to scratch: home quotas are far too small for them",
        f"export {prefix}_TMPDIR={base}/tmp",
        f"export {prefix}_CACHEDIR={base}/cache",
        f'mkdir -p "${prefix}_TMPDIR" "${prefix}_CACHEDIR"',
    ]
    notes: list[str] = []
    for kind in kinds:
        def_rel = f"containers/{kind}.def"
        def_path = repo_root / def_rel
        if not def_path.is_file():
            raise UserError(f"{def_path}: definition file not found")
        missing = [s for s in def_file_sources(def_path) if not (repo_root / s).exists()]
        if missing:
            notes.append(f"{def_rel}: %files sources missing in {repo_root}: {', '.join(missing)}")
        img, shapes = image_path(view, kind, repo_root)
        img_q = _quote_vars(_check_profile_value(img, f"container.images ({kind})"))
        used = f"used by {', '.join(shapes)}" if shapes else "no profile shape uses it yet"
        lines.append(f"# {kind}: {used}")
        lines.append(f"mkdir -p \"$(dirname {img_q})\"")
        flags = ["--remote"] if remote else ["--fakeroot"]
        if notest:
            flags.append("--notest")
        if force:
            flags.append("--force")
        lines.append(f"{runtime} build {' '.join(flags)} {img_q} {def_rel}")
    return "\n".join(lines) + "\n", notes


def cmd_build(args: argparse.Namespace) -> int:
    from skymath.paths import REPO_ROOT

    view = load_view(args.profile)
    runtime = args.runtime or (view.runtime if view.runtime != "none" else "apptainer")
    kinds = [args.image] if args.image else list(KINDS)
    script, notes = build_script(
        view, kinds, runtime=runtime, remote=args.remote, notest=args.notest, force=args.force, repo_root=REPO_ROOT
    )
    for n in notes:
        print(f"skymath: warning: {n}", file=sys.stderr)
    if not args.run:
        sys.stdout.write(script)
        return 0
    if notes:
        raise UserError(notes[0])
    if shutil.which(runtime) is None:
        raise UserError(
            f"containers build --run: {runtime!r} is not on PATH here; run it on a cluster build/login node "
            "(or drop --run to print the commands)"
        )
    return subprocess.run(["bash", "-c", script], check=False).returncode


def _run(argv: list[str], timeout: float = 900) -> tuple[int, str]:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return 124, f"timed out after {timeout:.0f}s"
    return p.returncode, (p.stdout + p.stderr).strip()


def check_rows(view: ProfileView, *, skip_gpu: bool) -> list[tuple[str, str, str, str, str, bool]]:
    """One row per image: (image, shapes, exists, skymath import, GPUs, ok)."""
    from skymath import __version__
    from skymath.containers import GPU_SHAPES

    rt = view.runtime
    rows = []
    for img, shapes in _shapes_of(view).items():
        path = os.path.expandvars(img)
        exists = Path(path).is_file()
        imp = gpus = "-"
        ok = exists
        if exists:
            rc, out = _run([rt, "exec", "--cleanenv", path, view.python, "-c", "import skymath; print(skymath.__version__)"])
            got = out.splitlines()[-1].strip() if out else ""
            if rc != 0:
                imp, ok = f"FAIL: {(out.splitlines() or ['exit ' + str(rc)])[-1][:80]}", False
            elif got != __version__:
                imp, ok = f"FAIL: skymath {got}, checkout {__version__} (rebuild)", False
            else:
                imp = f"ok ({got})"
            if any(s in GPU_SHAPES for s in shapes):
                if skip_gpu:
                    gpus = "skipped"
                else:
                    rc, out = _run([rt, "exec", "--nv", "--cleanenv", path, "nvidia-smi", "-L"], timeout=300)
                    n = sum(1 for line in out.splitlines() if line.startswith("GPU "))
                    if rc == 0 and n > 0:
                        gpus = f"ok ({n})"
                    else:
                        gpus, ok = "FAIL: --nv sees no GPU (run on a GPU node: srun --gres=gpu:1 ...)", False
        rows.append((img, ",".join(shapes), "yes" if exists else "MISSING", imp, gpus, ok))
    return rows


def cmd_check(args: argparse.Namespace) -> int:
    view = load_view(args.profile)
    if view.runtime == "none":
        rc, out = _run([view.python, "-c", "import skymath; print(skymath.__version__)"], timeout=120)
        print(f"runtime none: {view.python} imports skymath: {'ok ' + out if rc == 0 else 'FAIL ' + out}")
        return 0 if rc == 0 else 1
    if shutil.which(view.runtime) is None:
        raise UserError(
            f"containers check: {view.runtime!r} is not on PATH here; run it on the cluster "
            "(GPU check: srun -p <gpu partition> --gres=gpu:1 skymath containers check --profile "
            f"{view.name or 'NAME'})"
        )
    if not view.images:
        raise UserError(f"cluster profile {view.name}: container.images is empty")
    rows = check_rows(view, skip_gpu=args.skip_gpu)
    header = ("image", "shapes", "exists", "skymath", "gpus")
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(5)]
    for r in [header, *[r[:5] for r in rows]]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    bad = sum(1 for r in rows if not r[5])
    print(f"{len(rows) - bad} ok, {bad} failed")
    return 1 if bad else 0


def register(subparsers: argparse._SubParsersAction) -> None:
    ap = subparsers.add_parser("containers", help="build and check the Apptainer images (synth, train, eval)")
    sub = ap.add_subparsers(dest="containers_command", metavar="ACTION", required=True)
    b = sub.add_parser("build", help="print (or --run) the image build commands")
    b.add_argument("--image", choices=KINDS, help="one image (default: all three)")
    b.add_argument("--profile", help="cluster profile (name in launch/clusters/ or a YAML path)")
    b.add_argument("--runtime", choices=("apptainer", "singularity"), help="default: the profile's, else apptainer")
    b.add_argument("--remote", action="store_true", help="SingularityCE remote builder instead of --fakeroot")
    b.add_argument("--notest", action="store_true", help="skip the %%test section")
    b.add_argument("--force", action="store_true", help="overwrite an existing image")
    b.add_argument("--run", action="store_true", help="run the commands instead of printing them")
    b.set_defaults(func=cmd_build)
    c = sub.add_parser("check", help="on the cluster: images exist, skymath imports, --nv sees GPUs")
    c.add_argument("--profile", help="cluster profile (name in launch/clusters/ or a YAML path)")
    c.add_argument("--skip-gpu", action="store_true", help="skip the nvidia-smi check (e.g. on a login node)")
    c.set_defaults(func=cmd_check)
