"""`kubeplane up` as a real process: manifest edits under it move traffic and DNS; signals end it cleanly.

The module starts the venv's `kubeplane up` console script on a copy of examples/hello (plus a client pod)
under a unique lab name, finds it the way `apply` does (its state file) and waits for /healthz and for the
hello pod to answer its Service by name. Each test then edits the watched files (or runs `kubeplane apply`
/ `delete`) and asserts on what the client pod's packets reach: which pod answers a Service name, whether
a port accepts a connection, what `dig` run inside the pod's namespace hears from the cluster DNS. The
shared process ends with SIGTERM; two more start on their own labs: one stopped by SIGHUP (its terminal
closed), one run with `--keep` and stopped by SIGINT (Ctrl-C). Every process is ended by its pid and every
lab is removed, failures included.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kubeplane.daemon.client import DaemonClient, DaemonNotRunning, DaemonRequestFailed, find_daemon
from kubeplane.netns import clients, names
from kubeplane.netns.clients import ResponseError
from kubeplane.netns.lab import Lab
from kubeplane.netns.state import process_cmdline
from kubeplane.netns.supervisor import is_supervisor_cmdline
from kubeplane.testing import skip_unless_root, unique_lab_name

pytestmark = pytest.mark.root

KUBEPLANE = Path(sys.executable).with_name("kubeplane")  # the console script `pip install -e .` made
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hello" / "hello.yaml"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0
CHANGE_TIMEOUT = 10.0
COMMAND_TIMEOUT = 30.0
FAILED_CONNECT_TIMEOUT = 1.0
SERVICE_FQDN = "hello.default.svc.cluster.local"

CLIENT_POD = """apiVersion: v1
kind: Pod
metadata: {name: client}
spec: {containers: [{name: c}]}
"""

GREET_SERVICE = """apiVersion: v1
kind: Service
metadata: {name: greet}
spec:
  selector: {app: hello}
  ports: [{port: 80, targetPort: 8080}]
"""


def _example_documents() -> tuple[str, str]:
    """The hello example's Pod and Service as two manifest texts (so a test can delete the Service alone)."""
    pod, service = EXAMPLE.read_text().split("\n---\n")
    assert "kind: Pod" in pod and "kind: Service" in service
    return pod, service


HELLO_POD, HELLO_SERVICE = _example_documents()


def _second_pod(labels: str = "{app: hello}") -> str:
    renamed = HELLO_POD.replace("name: hello-1", "name: hello-2")
    return renamed.replace("labels: {app: hello}", f"labels: {labels}")


def _until(check: Callable[[], bool], what: str, timeout: float = CHANGE_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(0.1)


def _kubeplane(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(KUBEPLANE), *args], capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
    )


def _lab_netnses(lab: str) -> list[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10, check=True)
    return [line.split()[0] for line in listed.stdout.splitlines() if line.startswith(names.lab_prefix(lab))]


def _supervisors(lab: str) -> list[int]:
    """Pids of the lab's workload supervisor still alive (its namespaces could be gone while it runs)."""
    pids = (int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit())
    return [pid for pid in pids if is_supervisor_cmdline(process_cmdline(pid), lab)]


@dataclass
class UpProcess:
    """One `kubeplane up` process, its lab, the directory it watches and its captured output."""

    lab: str
    manifests: Path
    process: subprocess.Popen[bytes]
    output: Path

    @property
    def client_netns(self) -> str:
        return names.pod_netns(self.lab, "default", "client")

    @property
    def api(self) -> DaemonClient:
        return DaemonClient.for_lab(self.lab)

    def log(self) -> str:
        return self.output.read_text(errors="replace")

    def write(self, name: str, text: str) -> None:
        """Replace a watched file the way editors save: a new file renamed over the old one."""
        partial = self.manifests / f".{name}.partial"
        partial.write_text(text)
        partial.replace(self.manifests / name)

    def remove(self, name: str) -> None:
        (self.manifests / name).unlink(missing_ok=True)

    def pod_ip(self, pod: str) -> str:
        """The IP the running daemon gave `pod` (in namespace default), from its /state."""
        for item in self.api.state()["items"]:
            if item["kind"] == "Pod" and item["metadata"]["name"] == pod:
                return str(item["status"]["podIP"])
        raise AssertionError(f"the daemon serves no pod {pod}")

    def answering_pods(self, url: str, requests: int = 20) -> set[str]:
        """Which pods answered `requests` GETs of `url` from the client pod; failed requests are skipped."""
        seen: set[str] = set()
        for _ in range(requests):
            try:
                seen.add(clients.http_get(self.client_netns, url, timeout=FAILED_CONNECT_TIMEOUT)["pod"])
            except (OSError, ResponseError):
                continue
        return seen

    def connects(self, address: str, port: int) -> bool:
        try:
            clients.tcp_connect(self.client_netns, address, port, b"", timeout=FAILED_CONNECT_TIMEOUT)
        except OSError:
            return False
        return True

    def dns_status(self, name: str) -> str:
        """The response code `dig` gets for `name` from the client pod's namespace and resolv.conf."""
        answer = subprocess.run(
            ["ip", "netns", "exec", self.client_netns, "dig", "+time=1", "+tries=2", name, "A"],
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
        found = re.search(r"status: ([A-Z]+)", answer.stdout)
        return found.group(1) if found else f"no answer ({answer.stdout.strip()[-200:]})"

    def stop(self, signum: signal.Signals) -> int:
        """Send `signum` to the process and return its exit status (bounded wait)."""
        self.process.send_signal(signum)
        try:
            return self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"kubeplane up still running {STOP_TIMEOUT}s after {signum.name}") from None


def _start(lab: str, manifests: Path, output: Path, *extra: str) -> UpProcess:
    with output.open("wb") as sink:
        process = subprocess.Popen(
            [str(KUBEPLANE), "up", "-f", str(manifests), "--name", lab, *extra],
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    return UpProcess(lab, manifests, process, output)


def _wait_ready(up: UpProcess) -> None:
    """Until the process has published its API (state file with its pid), /healthz is 200 and the hello pod
    answers its Service name from the client pod; fails early with the process's output if it exits."""

    def ready() -> bool:
        if up.process.poll() is not None:
            raise AssertionError(f"kubeplane up exited {up.process.returncode}:\n{up.log()}")
        try:
            endpoint = find_daemon(up.lab)
            healthy = endpoint.pid == up.process.pid and DaemonClient(endpoint, timeout=2.0).health()[0]
        except (DaemonNotRunning, DaemonRequestFailed):
            return False
        return healthy and up.answering_pods("http://hello/", requests=1) == {"hello-1"}

    try:
        _until(ready, "kubeplane up ready", START_TIMEOUT)
    except AssertionError as err:
        raise AssertionError(f"{err}; its output:\n{up.log()}") from None


def _end(up: UpProcess) -> None:
    """Kill the process if a test left it running and remove whatever is left of its lab."""
    if up.process.poll() is None:
        up.process.kill()
        up.process.wait(timeout=STOP_TIMEOUT)
    if _lab_netnses(up.lab) or names.state_dir(up.lab).exists():
        Lab(up.lab).down()


def _write_example(manifests: Path) -> None:
    manifests.mkdir(exist_ok=True)
    (manifests / "hello-1.yaml").write_text(HELLO_POD)
    (manifests / "service.yaml").write_text(HELLO_SERVICE)
    (manifests / "client.yaml").write_text(CLIENT_POD)


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpProcess]:
    skip_unless_root()
    directory = tmp_path_factory.mktemp("up")
    _write_example(directory / "manifests")
    running = _start(unique_lab_name(), directory / "manifests", directory / "up.log")
    try:
        _wait_ready(running)
        yield running
    finally:
        _end(running)


@pytest.fixture
def hello(up: UpProcess) -> UpProcess:
    """The running process back on the unedited example: hello-1 alone answers `hello` on port 80."""
    up.remove("hello-2.yaml")
    for name, text in (("hello-1.yaml", HELLO_POD), ("service.yaml", HELLO_SERVICE)):
        if not (up.manifests / name).exists() or (up.manifests / name).read_text() != text:
            up.write(name, text)
    _until(lambda: up.answering_pods("http://hello/", requests=3) == {"hello-1"}, "hello-1 alone answers")
    return up


def test_up_is_announced_after_the_first_sync_and_the_log_gets_a_status_line_per_change(
    hello: UpProcess,
) -> None:
    lines = hello.log().splitlines()
    announced = f"lab {hello.lab} up; API {find_daemon(hello.lab).url}; Ctrl-C to stop"
    assert announced in lines
    first_status = lines[lines.index(announced) + 1 :][:1]
    assert first_status and "last sync: none yet" not in first_status[0], "rules were programmed before"

    def lines_counting_four_pods() -> int:
        return len(re.findall(r"\bpods 4\b", hello.log()))

    already = lines_counting_four_pods()
    hello.write("hello-2.yaml", _second_pod())
    _until(lambda: lines_counting_four_pods() > already, "a status line counting the new pod")


def test_added_pod_answers_the_service_until_relabelled_then_its_namespace_goes(hello: UpProcess) -> None:
    hello.write("hello-2.yaml", _second_pod())
    _until(lambda: hello.answering_pods("http://hello/") == {"hello-1", "hello-2"}, "hello-2 joins")

    hello.write("hello-2.yaml", _second_pod(labels="{app: retired}"))
    _until(lambda: hello.answering_pods("http://hello/") == {"hello-1"}, "hello-2's endpoint leaves")
    direct = clients.http_get(hello.client_netns, f"http://{hello.pod_ip('hello-2')}:8080/")
    assert direct["pod"] == "hello-2", "the pod itself still serves; only its endpoint went"

    retired = names.pod_netns(hello.lab, "default", "hello-2")

    hello.remove("hello-2.yaml")
    _until(lambda: retired not in _lab_netnses(hello.lab), "hello-2's namespace removed")
    assert hello.answering_pods("http://hello/") == {"hello-1"}


def test_changed_service_port_answers_on_the_new_port_and_not_the_old(hello: UpProcess) -> None:
    cluster_ip = clients.resolve(hello.client_netns, "hello")
    hello.write("service.yaml", HELLO_SERVICE.replace("port: 80,", "port: 8081,"))
    _until(lambda: hello.answering_pods("http://hello:8081/", requests=3) == {"hello-1"}, "port 8081 answers")
    assert clients.resolve(hello.client_netns, "hello") == cluster_ip
    assert not hello.connects(cluster_ip, 80)


def test_deleted_service_name_is_nxdomain_and_its_address_stops_answering(hello: UpProcess) -> None:
    cluster_ip = clients.resolve(hello.client_netns, "hello")
    assert hello.dns_status(SERVICE_FQDN) == "NOERROR"
    hello.remove("service.yaml")
    _until(lambda: hello.dns_status(SERVICE_FQDN) == "NXDOMAIN", "the deleted Service's name is NXDOMAIN")
    assert not hello.connects(cluster_ip, 80)
    assert hello.dns_status("kube-dns.kube-system.svc.cluster.local") == "NOERROR", "DNS itself still serves"


def test_invalid_edit_is_logged_naming_file_object_and_field_and_the_last_good_state_serves(
    hello: UpProcess,
) -> None:
    before = hello.api.state()
    hello.write("service.yaml", HELLO_SERVICE.replace("port: 80,", "port: 0,"))
    edited = re.escape(str(hello.manifests / "service.yaml"))
    logged = re.compile(rf"{edited}#\d+ Service default/hello: spec\.ports\[0\]\.port: ")
    _until(lambda: logged.search(hello.log()) is not None, "the bad edit is logged")
    assert hello.api.state() == before
    assert hello.answering_pods("http://hello/") == {"hello-1"}


def test_invalid_apply_exits_1_naming_file_object_and_field_and_changes_nothing(
    hello: UpProcess, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(HELLO_SERVICE.replace("port: 80,", "port: 0,"))
    before = hello.api.state()

    refused = _kubeplane("apply", "-f", str(bad), "--name", hello.lab)

    assert refused.returncode == 1
    assert refused.stdout == ""
    errors = refused.stderr.splitlines()
    assert len(errors) == 1, refused.stderr
    assert re.match(rf"{re.escape(str(bad))}#\d+ Service default/hello: spec\.ports\[0\]\.port: ", errors[0])
    assert hello.api.state() == before
    assert hello.answering_pods("http://hello/") == {"hello-1"}


def test_apply_adds_a_service_pods_reach_by_name_and_delete_removes_it(
    hello: UpProcess, tmp_path: Path
) -> None:
    greet = tmp_path / "greet.yaml"
    greet.write_text(GREET_SERVICE)

    applied = _kubeplane("apply", "-f", str(greet), "--name", hello.lab)
    assert applied.returncode == 0, applied.stderr
    _until(lambda: hello.answering_pods("http://greet/", requests=3) == {"hello-1"}, "greet answers")

    deleted = _kubeplane("delete", "-f", str(greet), "--name", hello.lab)
    assert deleted.returncode == 0, deleted.stderr
    _until(lambda: hello.dns_status("greet.default.svc.cluster.local") == "NXDOMAIN", "greet is NXDOMAIN")
    assert hello.answering_pods("http://hello/") == {"hello-1"}


def test_get_without_files_lists_the_services_the_running_daemon_serves(
    hello: UpProcess, tmp_path: Path
) -> None:
    greet = tmp_path / "greet.yaml"
    greet.write_text(GREET_SERVICE)
    applied = _kubeplane("apply", "-f", str(greet), "--name", hello.lab)
    assert applied.returncode == 0, applied.stderr
    try:
        listed = _kubeplane("get", "svc", "--name", hello.lab)
        assert listed.returncode == 0, listed.stderr
        cluster_ips = {row.split()[0]: row.split()[2] for row in listed.stdout.splitlines()[1:]}
        assert cluster_ips["greet"] == clients.resolve(hello.client_netns, "greet"), (
            "only the daemon has greet"
        )
        assert cluster_ips["hello"] == clients.resolve(hello.client_netns, "hello")
    finally:
        _kubeplane("delete", "-f", str(greet), "--name", hello.lab)


def test_sigterm_exits_0_and_removes_every_namespace_of_the_lab(up: UpProcess) -> None:
    assert _lab_netnses(up.lab)
    assert up.stop(signal.SIGTERM) == 0, up.log()
    assert _lab_netnses(up.lab) == []
    assert not names.state_dir(up.lab).exists()
    assert _supervisors(up.lab) == []


def test_busy_http_port_fails_in_one_line_and_leaves_no_namespace(tmp_path: Path) -> None:
    skip_unless_root()
    _write_example(tmp_path / "manifests")
    lab = unique_lab_name()
    manifests = str(tmp_path / "manifests")
    try:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            refused = _kubeplane("up", "-f", manifests, "--name", lab, "--http-port", str(port))
        left_behind = (_lab_netnses(lab), _supervisors(lab), names.state_dir(lab).exists())
    finally:
        if _lab_netnses(lab) or names.state_dir(lab).exists():
            Lab(lab).down()
    assert refused.returncode == 1, refused.stderr
    assert "Traceback" not in refused.stderr
    errors = [line for line in refused.stderr.splitlines() if line.startswith("kubeplane up:")]
    assert len(errors) == 1 and str(port) in errors[0], refused.stderr
    assert left_behind == ([], [], False)


def test_sighup_from_a_closed_terminal_tears_the_lab_down_like_sigterm(tmp_path: Path) -> None:
    skip_unless_root()
    _write_example(tmp_path / "manifests")
    hung_up = _start(unique_lab_name(), tmp_path / "manifests", tmp_path / "up.log")
    try:
        _wait_ready(hung_up)
        assert hung_up.stop(signal.SIGHUP) == 0, hung_up.log()
        assert _lab_netnses(hung_up.lab) == []
        assert _supervisors(hung_up.lab) == []
    finally:
        _end(hung_up)


def test_keep_leaves_the_lab_serving_after_ctrl_c_until_lab_down(tmp_path: Path) -> None:
    skip_unless_root()
    _write_example(tmp_path / "manifests")
    kept = _start(unique_lab_name(), tmp_path / "manifests", tmp_path / "up.log", "--keep")
    try:
        _wait_ready(kept)
        cluster_ip = clients.resolve(kept.client_netns, "hello")
        assert kept.stop(signal.SIGINT) == 0, kept.log()
        assert kept.client_netns in _lab_netnses(kept.lab)
        reply = clients.http_get(kept.client_netns, f"http://{cluster_ip}/", timeout=2.0)
        assert reply["pod"] == "hello-1", "the programmed rules and the workload outlive the daemon"

        removed = _kubeplane("lab", "down", "--name", kept.lab)
        assert removed.returncode == 0, removed.stderr
        assert _lab_netnses(kept.lab) == []
        assert _supervisors(kept.lab) == []
    finally:
        _end(kept)
