"""What the cluster says about itself: partitions (MaxTime, nodes), nodes (CPUs, memory, gres,
features), MaxArraySize, and the user's associations and QOS limits (sacctmgr). Read once per
check with `scontrol show ... -o` / `sacctmgr -P`, parsed without guessing: a command that fails
leaves its part unknown, and the checks that need it say so instead of passing silently."""

from __future__ import annotations

import getpass
import os
import re
import subprocess
from dataclasses import dataclass, field
from functools import cached_property

_KEY = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z0-9_:]*)=")


def run_cmd(argv: list[str], timeout: float = 60.0) -> tuple[int, str, str]:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        return 127, "", f"{argv[0]}: command not found"
    except subprocess.TimeoutExpired:
        return 124, "", f"{argv[0]}: no answer within {timeout:.0f} s"
    return r.returncode, r.stdout, r.stderr


def parse_oneliner(line: str) -> dict[str, str]:
    """`Key=value Key2=a value with spaces` (scontrol -o) -> dict; a value runs to the next key."""
    keys = list(_KEY.finditer(line))
    out: dict[str, str] = {}
    for i, m in enumerate(keys):
        end = keys[i + 1].start() if i + 1 < len(keys) else len(line)
        out[m.group(1)] = line[m.end():end].strip()
    return out


def time_limit_seconds(text: str | None) -> int | None:
    """Slurm MaxTime text -> seconds; None for UNLIMITED/INFINITE/unknown."""
    if not text or text.upper() in ("UNLIMITED", "INFINITE", "NONE", "N/A"):
        return None
    from skymath.errors import UserError
    from skymath.executors.render import time_seconds

    try:
        return time_seconds(text)
    except UserError:
        return None


def gres_count(gres: str, name: str = "gpu", gtype: str | None = None) -> int:
    """GPUs of one node from its Gres field: 'gpu:8', 'gpu:a100:4(S:0-1),gpu:v100:2' -> count."""
    total = 0
    for item in filter(None, (gres or "").split(",")):
        item = item.split("(", 1)[0]
        parts = item.split(":")
        if parts[0] != name or parts[-1] in ("", "(null)"):
            continue
        if not parts[-1].isdigit():
            continue
        t = parts[1] if len(parts) == 3 else None
        if gtype is None or t == gtype:
            total += int(parts[-1])
    return total


@dataclass
class Node:
    name: str
    cpus: int
    mem_mb: int
    gres: str
    features: set[str]
    partitions: set[str]
    state: str


@dataclass
class Partition:
    name: str
    max_time_s: int | None
    max_time: str
    state: str
    max_nodes: int | None
    allow_accounts: str = "ALL"
    allow_qos: str = "ALL"
    nodes: list[Node] = field(default_factory=list)


@dataclass
class Association:
    account: str
    qos: set[str]
    max_submit: int | None


@dataclass
class Qos:
    name: str
    max_submit_pu: int | None
    max_submit_pa: int | None
    max_wall_s: int | None
    max_wall: str


def _int(text: str | None) -> int | None:
    text = (text or "").strip()
    return int(text) if text.isdigit() else None


class ClusterFacts:
    """Lazily queried facts about the Slurm cluster this shell submits to."""

    def __init__(self, user: str | None = None) -> None:
        self.user = user or os.environ.get("USER") or getpass.getuser()
        self.errors: dict[str, str] = {}  # what could not be read, and why

    # ---- config ----------------------------------------------------------------------------------
    @cached_property
    def config(self) -> dict[str, str]:
        rc, out, err = run_cmd(["scontrol", "show", "config"])
        if rc != 0:
            self.errors["config"] = (err or out).strip()
            return {}
        cfg = {}
        for line in out.splitlines():
            if " = " in line:
                k, _, v = line.partition(" = ")
                cfg[k.strip()] = v.strip()
        return cfg

    @property
    def reachable(self) -> bool:
        return bool(self.config)

    @property
    def cluster_name(self) -> str | None:
        return self.config.get("ClusterName")

    @property
    def max_array_size(self) -> int | None:
        return _int(self.config.get("MaxArraySize"))

    @property
    def accounting(self) -> bool:
        return self.config.get("AccountingStorageType", "").endswith("slurmdbd")

    # ---- partitions and nodes ---------------------------------------------------------------------
    @cached_property
    def nodes(self) -> dict[str, Node]:
        rc, out, err = run_cmd(["scontrol", "show", "node", "-o"])
        if rc != 0:
            self.errors["nodes"] = (err or out).strip()
            return {}
        nodes = {}
        for line in out.splitlines():
            d = parse_oneliner(line)
            if "NodeName" not in d:
                continue
            feats = {f for f in d.get("AvailableFeatures", "").split(",") if f and f != "(null)"}
            parts = {p for p in d.get("Partitions", "").split(",") if p}
            nodes[d["NodeName"]] = Node(d["NodeName"], _int(d.get("CPUTot")) or 0, _int(d.get("RealMemory")) or 0,
                                        d.get("Gres", ""), feats, parts, d.get("State", ""))
        return nodes

    @cached_property
    def partitions(self) -> dict[str, Partition]:
        rc, out, err = run_cmd(["scontrol", "show", "partition", "-o"])
        if rc != 0:
            self.errors["partitions"] = (err or out).strip()
            return {}
        parts = {}
        for line in out.splitlines():
            d = parse_oneliner(line)
            if "PartitionName" not in d:
                continue
            name = d["PartitionName"]
            parts[name] = Partition(name, time_limit_seconds(d.get("MaxTime")), d.get("MaxTime", ""),
                                    d.get("State", ""), _int(d.get("MaxNodes")), d.get("AllowAccounts", "ALL"),
                                    d.get("AllowQos", "ALL"))
            if d.get("Default") == "YES":
                self.default_partition = name
        for node in self.nodes.values():
            for p in node.partitions:
                if p in parts:
                    parts[p].nodes.append(node)
        return parts

    default_partition: str | None = None

    def partition(self, name: str | None) -> Partition | None:
        parts = self.partitions
        return parts.get(name or self.default_partition or "")

    # ---- accounting ----------------------------------------------------------------------------------
    @cached_property
    def associations(self) -> list[Association] | None:
        """The user's associations on this cluster; None when accounting cannot be read."""
        if not self.accounting:
            return None
        argv = ["sacctmgr", "-n", "-P", "show", "assoc", f"user={self.user}", "format=cluster,account,qos,maxsubmit"]
        rc, out, err = run_cmd(argv)
        if rc != 0:
            self.errors["associations"] = (err or out).strip()
            return None
        out_list = []
        for line in out.splitlines():
            parts = line.split("|")
            if len(parts) < 4 or (self.cluster_name and parts[0] != self.cluster_name):
                continue
            out_list.append(Association(parts[1], {q for q in parts[2].split(",") if q}, _int(parts[3])))
        return out_list

    @cached_property
    def qos(self) -> dict[str, Qos] | None:
        if not self.accounting:
            return None
        rc, out, err = run_cmd(["sacctmgr", "-n", "-P", "show", "qos", "format=name,maxsubmitpu,maxsubmitpa,maxwall"])
        if rc != 0:
            self.errors["qos"] = (err or out).strip()
            return None
        res = {}
        for line in out.splitlines():
            parts = line.split("|")
            if len(parts) >= 4 and parts[0]:
                res[parts[0]] = Qos(parts[0], _int(parts[1]), _int(parts[2]), time_limit_seconds(parts[3]), parts[3])
        return res

    @cached_property
    def default_account(self) -> str | None:
        if not self.accounting:
            return None
        rc, out, _ = run_cmd(["sacctmgr", "-n", "-P", "show", "user", self.user, "format=defaultaccount"])
        return out.strip().splitlines()[0] if rc == 0 and out.strip() else None

    @cached_property
    def queued_jobs(self) -> int | None:
        """Jobs (array tasks one each) this user has pending or running now."""
        rc, out, err = run_cmd(["squeue", "-h", "-r", "-u", self.user, "-o", "%i"])
        if rc != 0:
            self.errors["squeue"] = (err or out).strip()
            return None
        return len([ln for ln in out.splitlines() if ln.strip()])
