"""What a lab has made, on disk under /run/kubeplane/<lab>/, so `lab down` can undo it after any crash.

state.json is written before each thing it names is created (namespaces, /etc/netns directories) and right
after the supervisor is spawned, so a `kill -9` at any moment leaves a record that covers everything that
exists. It also carries the plan, which lets a later process (CLI `exec`, `lab down`) find pods without the
manifests. workloads.json is what the supervisor serves (re-read on SIGHUP);
readiness.json is the supervisor's report: which pods' workloads listen, and the pids of command
workloads.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from kubeplane.netns import names
from kubeplane.netns.plan import LabPlan, NodePlan, PodPlan, Workload, WorkloadPort

STATE_FILE = "state.json"
WORKLOADS_FILE = "workloads.json"
READINESS_FILE = "readiness.json"
SUPERVISOR_LOG = "supervisor.log"


class StateError(RuntimeError):
    """A state file is missing or unreadable."""


@dataclass(frozen=True)
class LabState:
    lab: str
    netnses: tuple[str, ...] = ()
    etc_dirs: tuple[str, ...] = ()
    supervisor_pid: int | None = None
    plan: LabPlan | None = field(default=None, compare=False)


@dataclass(frozen=True)
class CommandProcess:
    pid: int
    argv: tuple[str, ...]


@dataclass(frozen=True)
class Readiness:
    """The supervisor's latest report: pods whose workloads are serving, its command processes, and the
    workloads generation it has fully started (0 until it serves the first)."""

    ready: frozenset[str] = frozenset()
    commands: tuple[CommandProcess, ...] = ()
    generation: int = 0  # the workloads.json generation the supervisor serves


@dataclass(frozen=True)
class WorkloadSet:
    """workloads.json: what the supervisor should serve; `generation` grows with every change."""

    generation: int
    workloads: tuple[Workload, ...]


def write_json_atomically(path: Path, payload: Any) -> None:
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=1, sort_keys=True))
    os.replace(tmp, path)


def _workload_from_dict(raw: dict[str, Any]) -> Workload:
    ports = tuple(WorkloadPort(**p) for p in raw.pop("ports"))
    return Workload(ports=ports, command=tuple(raw.pop("command")), **raw)


def plan_from_dict(raw: dict[str, Any]) -> LabPlan:
    nodes = tuple(NodePlan(**{**n, "external_ips": tuple(n.get("external_ips", ()))}) for n in raw["nodes"])
    pods = tuple(PodPlan(**{**p, "workload": _workload_from_dict(dict(p["workload"]))}) for p in raw["pods"])
    scalars = {k: v for k, v in raw.items() if k not in ("nodes", "pods")}
    scalars["service_cidrs"] = tuple(scalars["service_cidrs"])
    scalars["external_routes"] = tuple(scalars["external_routes"])
    return LabPlan(nodes=nodes, pods=pods, **scalars)


def workloads_to_json(workloads: tuple[Workload, ...]) -> list[dict[str, Any]]:
    return [asdict(w) for w in workloads]


def workloads_from_json(raw: list[dict[str, Any]]) -> tuple[Workload, ...]:
    return tuple(_workload_from_dict(dict(w)) for w in raw)


class StateStore:
    """The files of one lab's state directory."""

    def __init__(self, lab: str) -> None:
        self.lab = names.validate_lab_name(lab)
        self.directory = names.state_dir(lab)

    def exists(self) -> bool:
        return (self.directory / STATE_FILE).exists()

    def save(self, state: LabState) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        payload = {
            "lab": state.lab,
            "netnses": list(state.netnses),
            "etc_dirs": list(state.etc_dirs),
            "supervisor_pid": state.supervisor_pid,
            "plan": asdict(state.plan) if state.plan is not None else None,
        }
        write_json_atomically(self.directory / STATE_FILE, payload)

    def load(self) -> LabState:
        path = self.directory / STATE_FILE
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError as err:
            raise StateError(f"lab {self.lab} has no state ({path} missing): is it up?") from err
        except (OSError, ValueError) as err:
            raise StateError(f"{path}: unreadable lab state: {err}") from err
        plan = plan_from_dict(raw["plan"]) if raw.get("plan") else None
        return LabState(
            lab=raw["lab"],
            netnses=tuple(raw.get("netnses", ())),
            etc_dirs=tuple(raw.get("etc_dirs", ())),
            supervisor_pid=raw.get("supervisor_pid"),
            plan=plan,
        )

    def record_supervisor(self, pid: int) -> None:
        self.save(replace(self.load(), supervisor_pid=pid))

    def save_workloads(self, workload_set: WorkloadSet) -> Path:
        path = self.directory / WORKLOADS_FILE
        workloads = workloads_to_json(workload_set.workloads)
        write_json_atomically(path, {"generation": workload_set.generation, "workloads": workloads})
        return path

    def load_workloads(self) -> WorkloadSet:
        try:
            raw = json.loads((self.directory / WORKLOADS_FILE).read_text())
        except FileNotFoundError:
            return WorkloadSet(0, ())
        return WorkloadSet(int(raw["generation"]), workloads_from_json(raw["workloads"]))

    def save_readiness(self, readiness: Readiness) -> None:
        payload = {
            "ready": sorted(readiness.ready),
            "commands": [{"pid": c.pid, "argv": list(c.argv)} for c in readiness.commands],
            "generation": readiness.generation,
        }
        write_json_atomically(self.directory / READINESS_FILE, payload)

    def load_readiness(self) -> Readiness:
        try:
            raw = json.loads((self.directory / READINESS_FILE).read_text())
        except (FileNotFoundError, ValueError):
            return Readiness()
        commands = tuple(CommandProcess(c["pid"], tuple(c["argv"])) for c in raw.get("commands", ()))
        return Readiness(frozenset(raw.get("ready", ())), commands, int(raw.get("generation", 0)))

    @property
    def supervisor_log(self) -> Path:
        return self.directory / SUPERVISOR_LOG


def process_cmdline(pid: int) -> tuple[str, ...]:
    """The argv of a live process, or () if it is gone (or a zombie)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return ()
    return tuple(part.decode(errors="replace") for part in raw.split(b"\0") if part)
