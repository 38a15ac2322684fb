"""Lab state on disk: the plan and readiness survive a round trip; ownership checks read /proc."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kubeplane.model.objects import Cluster, NodeAddress
from kubeplane.netns import names
from kubeplane.netns.demo_cluster import demo_cluster, demo_node, demo_pod
from kubeplane.netns.plan import plan_lab
from kubeplane.netns.state import (
    CommandProcess,
    LabState,
    Readiness,
    StateError,
    StateStore,
    WorkloadSet,
    process_cmdline,
)
from kubeplane.netns.supervisor import is_supervisor_cmdline


@pytest.fixture(autouse=True)
def state_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(names, "STATE_ROOT", tmp_path)
    return tmp_path


def test_state_round_trips_the_plan_and_what_was_created() -> None:
    node = demo_node(1)
    node = node.__class__(
        node.meta, node.pod_cidrs, (*node.addresses, NodeAddress("ExternalIP", "192.0.2.1"))
    )
    cluster = Cluster(
        nodes=(node,),
        pods=(
            demo_pod("web", 1, 9, annotations={"kubeplane.dev/command": "sleep 5"}),
            *demo_cluster(1, 1).pods,
        ),
    )
    plan = plan_lab("lab", cluster)
    store = StateStore("lab")
    store.save(LabState("lab", plan.all_netnses, ("/etc/netns/x",), supervisor_pid=42, plan=plan))
    loaded = store.load()
    assert loaded == LabState("lab", plan.all_netnses, ("/etc/netns/x",), supervisor_pid=42)
    assert loaded.plan == plan
    store.record_supervisor(43)
    assert store.load().supervisor_pid == 43


def test_workloads_and_readiness_round_trip() -> None:
    plan = plan_lab("lab", demo_cluster(2, 2))
    store = StateStore("lab")
    store.save(LabState("lab"))
    assert store.load_workloads() == WorkloadSet(0, ())
    workloads = WorkloadSet(3, tuple(p.workload for p in plan.pods))
    store.save_workloads(workloads)
    assert store.load_workloads() == workloads
    assert store.load_readiness() == Readiness()
    readiness = Readiness(frozenset({"default/echo-1-0"}), (CommandProcess(7, ("sleep", "5")),), 3)
    store.save_readiness(readiness)
    assert store.load_readiness() == readiness


def test_missing_state_is_a_clear_error(state_root: Path) -> None:
    with pytest.raises(StateError, match="lab nothere has no state"):
        StateStore("nothere").load()
    (state_root / "broken").mkdir()
    (state_root / "broken" / "state.json").write_text("{not json")
    with pytest.raises(StateError, match="unreadable lab state"):
        StateStore("broken").load()


def test_process_cmdline_reads_live_processes_and_is_empty_for_gone_ones() -> None:
    assert process_cmdline(os.getpid())
    assert process_cmdline(2**22 + 12345) == ()


def test_supervisor_is_recognised_only_for_its_own_lab() -> None:
    argv = ("/usr/bin/python3", "-m", "kubeplane.netns.supervisor", "--lab", "abc")
    assert is_supervisor_cmdline(argv, "abc")
    assert not is_supervisor_cmdline(argv, "ab")
    assert not is_supervisor_cmdline(("/usr/bin/python3", "-m", "kubeplane.netns.supervisor"), "abc")
    assert not is_supervisor_cmdline(("sleep", "--lab", "abc"), "abc")
