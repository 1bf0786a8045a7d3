"""Container images: every job shape the run uses needs an image (per shape or `default`), and
that image must exist and be readable from here (images live on a shared file system; a remote
URI such as docker:// is pulled at job start and only noted). Whether the skymath inside matches
this checkout is `skymath containers check`'s job (it runs the image)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from skymath.preflight.problems import Findings, join_stages

REMOTE = ("docker://", "oras://", "library://", "shub://", "http://", "https://")


def shapes_in_use(cfg: Any) -> dict[str, list[str]]:
    """shape -> stages that run in it (stop jobs of service stages run as cpu-single)."""
    out: dict[str, list[str]] = {}
    for name, spec in cfg.stages.items():
        out.setdefault(spec.shape or "cpu-single", []).append(name)
    return out


def check_images(cfg: Any, profile: Any) -> Findings:
    f = Findings()
    c = profile.container
    if c.runtime == "none":
        return f
    by_image: dict[str, tuple[list[str], list[str]]] = {}  # image -> (shapes, stages)
    for shape, stages in sorted(shapes_in_use(cfg).items()):
        image = c.image_for(shape)
        if not image:
            f.add("images", join_stages(stages), f"job shape {shape} has no container image ({c.runtime} runtime)",
                  f"set container.images.{shape} (or container.images.default) in the cluster profile")
            continue
        shapes, users = by_image.setdefault(image, ([], []))
        shapes.append(shape)
        users.extend(stages)
    for image, (shapes, stages) in by_image.items():
        who = join_stages(stages)
        keys = ", ".join(f"container.images.{s}" if s in c.images else "container.images.default" for s in shapes)
        if image.startswith(REMOTE):
            f.note(f"image {image} ({keys}) is pulled by {c.runtime} at job start")
            continue
        path = Path(os.path.expandvars(image)).expanduser()
        if not path.exists():
            f.add("images", who, f"image {path} ({keys}) does not exist",
                  f"build it: `skymath containers build --profile {profile.name} --run` (or fix {keys})")
        elif not os.access(path, os.R_OK) or (path.is_dir() and not os.access(path, os.X_OK)):
            f.add("images", who, f"image {path} ({keys}) is not readable by {os.environ.get('USER', 'you')}",
                  f"chmod a+r {path} (or ask its owner)")
        elif path.is_file() and path.stat().st_size == 0:
            f.add("images", who, f"image {path} ({keys}) is empty (an interrupted build?)",
                  f"rebuild it: `skymath containers build --profile {profile.name} --force --run`")
    return f
