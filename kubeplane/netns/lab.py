"""`Lab`: bring a Cluster's nodes and pods up as namespaces with workloads, use them, and tear it all down.

One `Lab(name)` handle serves every process: `up` records everything it will create in
/run/kubeplane/<lab>/state.json before creating it, so `Lab(name).down()` from any later process (the CLI, a
test fixture after a crash) removes exactly that, plus any `kp-<lab>-*` namespace or /etc/netns entry left by
an older run. Processes are signalled only when /proc/<pid>/cmdline shows they are ours.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubeplane
from kubeplane.model.objects import Cluster
from kubeplane.netns import clients, names
from kubeplane.netns.etcfiles import etc_netns_dirs, remove_etc_dir, write_etc_files
from kubeplane.netns.nsfs import create_netns, list_netns, remove_netns
from kubeplane.netns.plan import LabPlan, PodPlan, Workload, plan_lab
from kubeplane.netns.state import LabState, Readiness, StateStore, WorkloadSet, process_cmdline
from kubeplane.netns.supervisor import is_supervisor_cmdline, supervisor_argv
from kubeplane.netns.topology import (
    Progress,
    add_pods,
    build_topology,
    detach_pods,
    sync_external_routes,
)

log = logging.getLogger(__name__)

STOP_TIMEOUT = 3.0
POLL_INTERVAL = 0.02


class LabError(RuntimeError):
    """The lab cannot do what was asked (already up, not up, unknown pod, supervisor died, ...)."""


@dataclass(frozen=True)
class ApplyReport:
    """What `Lab.apply` changed: `namespace/pod` keys removed and added (a re-wired pod is in both)."""

    removed: tuple[str, ...]
    added: tuple[str, ...]


@dataclass(frozen=True)
class DownReport:
    netnses_removed: int
    etc_dirs_removed: int
    processes_stopped: int


def _wait_gone(pid: int, timeout: float, child: subprocess.Popen[bytes] | None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child is not None and child.poll() is not None:
            return True
        if child is None and not process_cmdline(pid):
            return True
        time.sleep(POLL_INTERVAL)
    return False


def _stop_process(pid: int, use_group: bool, child: subprocess.Popen[bytes] | None = None) -> None:
    """SIGTERM, then SIGKILL after STOP_TIMEOUT; the caller has checked the pid is ours."""
    try:
        kill = os.killpg if use_group and os.getpgid(pid) == pid else os.kill
    except ProcessLookupError:
        return
    with contextlib.suppress(ProcessLookupError):
        kill(pid, signal.SIGTERM)
    if not _wait_gone(pid, STOP_TIMEOUT, child):
        with contextlib.suppress(ProcessLookupError):
            kill(pid, signal.SIGKILL)
        _wait_gone(pid, STOP_TIMEOUT, child)


def _wiring(pod: PodPlan | None) -> tuple[object, ...] | None:
    """What a pod's namespace and links depend on; a change means re-creating them."""
    if pod is None:
        return None
    return (pod.netns, pod.ip, pod.ip6, pod.node, pod.host_network, pod.node_veth)


def list_labs() -> list[str]:
    """Labs with state under /run/kubeplane, plus labs only visible by their leftover namespaces."""
    found: set[str] = set()
    if names.STATE_ROOT.is_dir():
        found.update(p.name for p in names.STATE_ROOT.iterdir() if (p / "state.json").exists())
    for netns in list_netns(f"{names.NETNS_PREFIX}-"):
        lab = netns.split("-")[1]
        with contextlib.suppress(names.BadLabName):
            found.add(names.validate_lab_name(lab))
    return sorted(found)


class Lab:
    """A handle on lab `name`, up or not. `up` builds it; every other method works from its recorded state."""

    def __init__(self, name: str = names.DEFAULT_LAB) -> None:
        self.name = names.validate_lab_name(name)
        self.store = StateStore(name)
        self._plan: LabPlan | None = None
        self._supervisor: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"Lab({self.name!r})"

    # --- lifecycle -----------------------------------------------------------------------------------------

    def is_up(self) -> bool:
        return self.store.exists()

    def up(
        self,
        cluster: Cluster,
        *,
        workloads: bool = True,
        progress: Progress | None = None,
        ready_timeout: float = 15.0,
    ) -> Lab:
        """Build every namespace, link, route and /etc/netns file of `cluster`, then (if `workloads`) start
        the supervisor and wait until it listens. On any failure everything made so far is removed."""
        plan = plan_lab(self.name, cluster)
        leftovers = list_netns(names.lab_prefix(self.name))
        if self.store.exists() or leftovers:
            raise LabError(
                f"lab {self.name} is already up (or left over): run `kubeplane lab down --name "
                f"{self.name}` first"
            )
        started = time.monotonic()
        self.store.save(LabState(self.name, plan.all_netnses, etc_netns_dirs(plan), plan=plan))
        self._plan = plan
        try:
            create_netns(plan.all_netnses)
            build_topology(plan, progress)
            write_etc_files(plan)
            if workloads:
                self._start_supervisor(tuple(p.workload for p in plan.pods), ready_timeout)
        except BaseException:
            self.down()
            raise
        log.info(
            "lab up lab=%s netns=%d seconds=%.2f",
            self.name,
            len(plan.all_netnses),
            time.monotonic() - started,
        )
        return self

    def _start_supervisor(self, workloads: tuple[Workload, ...], ready_timeout: float) -> None:
        self.store.save_workloads(WorkloadSet(1, workloads))
        env = dict(os.environ)
        package_root = str(Path(kubeplane.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
        with open(self.store.supervisor_log, "ab") as log_file:
            self._supervisor = subprocess.Popen(
                supervisor_argv(sys.executable, self.name),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                start_new_session=True,
                env=env,
                close_fds=True,
            )
        self.store.record_supervisor(self._supervisor.pid)
        deadline = time.monotonic() + ready_timeout
        while self.store.load_readiness().generation < 1:
            if self._supervisor.poll() is not None:
                raise LabError(
                    f"lab {self.name}: supervisor exited {self._supervisor.returncode}; "
                    f"see {self.store.supervisor_log}:\n{self._log_tail()}"
                )
            if time.monotonic() > deadline:
                raise LabError(
                    f"lab {self.name}: supervisor not serving after {ready_timeout:.0f}s; "
                    f"see {self.store.supervisor_log}"
                )
            time.sleep(POLL_INTERVAL)

    def apply(self, cluster: Cluster, ready_timeout: float = 15.0) -> ApplyReport:
        """Bring an up lab in line with `cluster`, pod by pod: pods that are gone or moved (new IP, node or
        hostNetwork) lose their namespace, new ones get one, /etc/netns files and the router's external
        routes are rewritten, and the supervisor (if running) switches to the new workloads; pods that did
        not change keep their namespace and connections. Node or service CIDR changes need a new lab."""
        self._plan = None  # another process may have applied since this handle last looked
        old = self.plan
        new = plan_lab(self.name, cluster)
        if (old.nodes, old.service_cidrs) != (new.nodes, new.service_cidrs):
            raise LabError(f"lab {self.name}: nodes or service CIDRs changed; recreate it (down, then up)")
        old_pods = {p.key: p for p in old.pods}
        new_pods = {p.key: p for p in new.pods}
        removed = [p for k, p in old_pods.items() if _wiring(p) != _wiring(new_pods.get(k))]
        added = [p for k, p in new_pods.items() if _wiring(p) != _wiring(old_pods.get(k))]
        state = self.store.load()
        netnses = tuple(dict.fromkeys([*state.netnses, *new.all_netnses]))
        etc_dirs = tuple(dict.fromkeys([*state.etc_dirs, *etc_netns_dirs(new)]))
        self.store.save(LabState(self.name, netnses, etc_dirs, state.supervisor_pid, plan=old))
        detach_pods(old, removed)
        for pod in removed:
            if not pod.host_network:
                remove_netns(pod.netns)
                remove_etc_dir(str(names.etc_netns_dir(pod.netns)))
        create_netns([p.netns for p in added if not p.host_network])
        add_pods(new, added)
        write_etc_files(new)
        sync_external_routes(new, old.external_routes)
        final = LabState(self.name, new.all_netnses, etc_netns_dirs(new), state.supervisor_pid, plan=new)
        self.store.save(final)
        self._plan = new
        if state.supervisor_pid is not None and self._supervisor_alive(state.supervisor_pid):
            self._reload_supervisor(state.supervisor_pid, tuple(p.workload for p in new.pods), ready_timeout)
        log.info("lab applied lab=%s removed=%d added=%d", self.name, len(removed), len(added))
        return ApplyReport(tuple(p.key for p in removed), tuple(p.key for p in added))

    def _supervisor_alive(self, pid: int) -> bool:
        return is_supervisor_cmdline(process_cmdline(pid), self.name)

    def _reload_supervisor(self, pid: int, workloads: tuple[Workload, ...], ready_timeout: float) -> None:
        generation = self.store.load_workloads().generation + 1
        self.store.save_workloads(WorkloadSet(generation, workloads))
        os.kill(pid, signal.SIGHUP)
        deadline = time.monotonic() + ready_timeout
        while self.store.load_readiness().generation < generation:
            if time.monotonic() > deadline or not self._supervisor_alive(pid):
                raise LabError(
                    f"lab {self.name}: supervisor did not take workloads generation {generation}; "
                    f"see {self.store.supervisor_log}"
                )
            time.sleep(POLL_INTERVAL)

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.store.supervisor_log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def down(self) -> DownReport:
        """Stop our processes and remove every namespace and /etc/netns entry this lab ever made."""
        state = self.store.load() if self.store.exists() else LabState(self.name)
        stopped = self._stop_processes(state)
        prefix = names.lab_prefix(self.name)
        netnses = dict.fromkeys([*state.netnses, *list_netns(prefix)])
        removed = sum(remove_netns(n) for n in reversed(list(netnses)))
        etc_dirs = dict.fromkeys([*state.etc_dirs, *(str(p) for p in names.ETC_NETNS_DIR.glob(f"{prefix}*"))])
        etc_removed = sum(remove_etc_dir(d) for d in etc_dirs)
        shutil.rmtree(self.store.directory, ignore_errors=True)
        with contextlib.suppress(OSError):
            names.STATE_ROOT.rmdir()
        self._plan = None
        log.info("lab down lab=%s netns=%d etc=%d processes=%d", self.name, removed, etc_removed, stopped)
        return DownReport(removed, etc_removed, stopped)

    def _stop_processes(self, state: LabState) -> int:
        stopped = 0
        pid = state.supervisor_pid
        if pid is not None and is_supervisor_cmdline(process_cmdline(pid), self.name):
            _stop_process(pid, use_group=False, child=self._supervisor)
            stopped += 1
        elif self._supervisor is not None:
            self._supervisor.poll()
        self._supervisor = None
        for command in self.store.load_readiness().commands:
            if process_cmdline(command.pid) == command.argv:
                _stop_process(command.pid, use_group=True)
                stopped += 1
        return stopped

    # --- lookups -------------------------------------------------------------------------------------------

    @property
    def plan(self) -> LabPlan:
        if self._plan is None:
            plan = self.store.load().plan
            if plan is None:
                raise LabError(f"lab {self.name}: state has no plan")
            self._plan = plan
        return self._plan

    def node_netns(self, node: str) -> str:
        return names.node_netns(self.name, node)

    def pod_netns(self, namespace: str, pod: str) -> str:
        return self.pod(namespace, pod).netns

    @property
    def external_netns(self) -> str:
        return names.external_netns(self.name)

    @property
    def underlay_netns(self) -> str:
        return names.underlay_netns(self.name)

    def pod(self, namespace: str, name: str) -> PodPlan:
        for pod in self.plan.pods:
            if pod.namespace == namespace and pod.name == name:
                return pod
        raise LabError(f"lab {self.name} has no pod {namespace}/{name}")

    def pod_ip(self, namespace: str, name: str) -> str:
        return self.pod(namespace, name).ip

    def netns_of(self, target: str) -> str:
        """The namespace of `target`: `external`, `node/NAME`, `NAMESPACE/POD` or `POD` (in `default`)."""
        if target == "external":
            return self.external_netns
        kind, _, rest = target.partition("/")
        if kind == "node" and rest:
            if not any(n.name == rest for n in self.plan.nodes):
                raise LabError(f"lab {self.name} has no node {rest}")
            return self.node_netns(rest)
        if not rest:
            return self.pod_netns("default", target)
        return self.pod_netns(kind, rest)

    def ready_pods(self) -> frozenset[str]:
        """`namespace/pod` keys whose workload the supervisor reports serving."""
        return self.store.load_readiness().ready

    def readiness(self) -> Readiness:
        return self.store.load_readiness()

    def wait_ready(self, pods: Sequence[str], timeout: float = 10.0) -> None:
        """Block until every `namespace/pod` in `pods` is ready (LabError after `timeout`)."""
        deadline = time.monotonic() + timeout
        while not set(pods) <= self.ready_pods():
            if time.monotonic() > deadline:
                missing = sorted(set(pods) - self.ready_pods())
                raise LabError(f"lab {self.name}: not ready after {timeout:.0f}s: {', '.join(missing)}")
            time.sleep(POLL_INTERVAL * 5)

    # --- doing things inside -------------------------------------------------------------------------------

    def exec(
        self,
        target: str,
        argv: Sequence[str],
        *,
        input: str | None = None,
        timeout: float | None = 30.0,
        capture: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """Run `argv` in `target`'s namespace via `ip netns exec`, so /etc/netns/<netns>/resolv.conf and hosts
        are bind-mounted over /etc as a pod would see them. Never raises on a non-zero exit."""
        netns = self.netns_of(target)
        return subprocess.run(
            ["ip", "netns", "exec", netns, *argv],
            input=input,
            capture_output=capture,
            text=True,
            timeout=timeout,
            check=False,
        )

    def http_get(self, target: str, url: str, timeout: float = 5.0) -> dict[str, Any]:
        """GET `url` from `target` (names resolved with the target's resolv.conf); the echo's JSON."""
        return clients.http_get(self.netns_of(target), url, timeout)

    def http_request(self, target: str, url: str, timeout: float = 5.0) -> clients.HttpResponse:
        return clients.http_request(self.netns_of(target), url, timeout)

    def udp_echo(
        self, target: str, ip: str, port: int, payload: bytes = b"ping", timeout: float = 2.0
    ) -> dict[str, Any]:
        return clients.udp_echo(self.netns_of(target), ip, port, payload, timeout)

    def tcp_connect(
        self, target: str, ip: str, port: int, payload: bytes = b"ping\n", timeout: float = 2.0
    ) -> bytes:
        return clients.tcp_connect(self.netns_of(target), ip, port, payload, timeout)

    def resolve(self, target: str, host: str, timeout: float = 2.0, family: clients.Family = "IPv4") -> str:
        return clients.resolve(self.netns_of(target), host, timeout, family)


def load_manifests(paths: Sequence[str | os.PathLike[str]]) -> Cluster:
    """The Cluster the manifest loader builds from files or directories (kubeplane.loader)."""
    # Imported here: the loader belongs to the model layer and pulls in YAML parsing the lab does not need.
    from kubeplane.loader import load_cluster

    return load_cluster([Path(p) for p in paths]).cluster
