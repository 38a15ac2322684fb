"""Run one command inside a user-mode Linux (UML) kernel, for tests that need kernel features the host lacks.

kube-proxy's IPVS mode needs IP_VS, which many CI kernels (this project's machines included) neither have nor
can load. Debian's `user-mode-linux` package ships a kernel built as an ordinary program, with IP_VS, ipset,
iptables (legacy, no nftables), conntrack, veth and network namespaces as modules: it boots in a few seconds
without KVM or root on the host. The guest uses the host's `/` through hostfs, read-only, so the repo, the
venv and the Debian tools are where the host has them; the guest writes only to its own tmpfs and to one
exchange directory that this runner creates (and removes) under the host's temporary directory.

    python tests/uml/run.py [--timeout SECONDS] [--mem SIZE] -- COMMAND [ARG...]

Exit status: the command's own; 0 after one `SKIP` line when no UML kernel can run here (not installed, no
module tree, the kernel does not boot); 124 when the guest outlives --timeout (it is killed); 125 when the
guest stops before the command finished.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import ctypes
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

INIT_SCRIPT = Path(__file__).resolve().with_name("init.sh")
UML_MODULES_ROOT = Path("/usr/lib/uml/modules")
START_MARKER = "KP_UML_START"
END_MARKER = "KP_UML_END"
# Loaded at boot: IPVS's netlink family and its schedulers are not loaded on demand; the rest would be, but
# loading them up front keeps the first test from paying for it.
DEFAULT_MODULES = (
    "ip_vs",
    "ip_vs_rr",
    "ip_vs_wrr",
    "ip_vs_lc",
    "ip_vs_sh",
    "veth",
    "dummy",
    "ip_set",
    "xt_set",
    "nf_conntrack",
    "nf_conntrack_netlink",
    "iptable_nat",
    "iptable_filter",
)
# Host environment variables the guest command inherits; everything else starts clean.
PASSED_ENV_PREFIXES = ("KUBEPLANE_", "PYTEST_")
EXIT_TIMEOUT = 124
EXIT_GUEST_DIED = 125
EXIT_INTERRUPTED = 130
BOOT_LOG_LINES = 30
PR_SET_CHILD_SUBREAPER = 36


class UmlUnavailable(Exception):
    """No UML kernel can run on this machine; the message says why in one line."""


@dataclass(frozen=True)
class UmlKernel:
    binary: str
    version: str


@dataclass(frozen=True)
class GuestRun:
    booted: bool
    exit_code: int | None
    timed_out: bool
    boot_seconds: float
    total_seconds: float
    boot_log: tuple[str, ...]


def find_kernel() -> UmlKernel:
    """The installed UML kernel, or UmlUnavailable naming what is missing."""
    binary = shutil.which("linux.uml") or shutil.which("linux.uml", path="/usr/bin")
    if binary is None:
        raise UmlUnavailable("user-mode-linux is not installed (apt-get install user-mode-linux)")
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    if not (UML_MODULES_ROOT / version).is_dir():
        raise UmlUnavailable(f"no module tree {UML_MODULES_ROOT / version} for UML kernel {version}")
    if shutil.which("modprobe", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is None:
        raise UmlUnavailable("modprobe is missing (apt-get install kmod)")
    return UmlKernel(binary=binary, version=version)


def guest_command_script(argv: list[str], cwd: str) -> str:
    """The shell script the guest's init runs: the command in `cwd` with a clean, explicit environment."""
    env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "TMPDIR": "/tmp",
        "KUBEPLANE_IN_UML": "1",
        # The host tree is read-only in the guest: no bytecode caches, no pytest cache.
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    env.update({k: v for k, v in os.environ.items() if k.startswith(PASSED_ENV_PREFIXES)})
    env["PYTEST_ADDOPTS"] = (env.get("PYTEST_ADDOPTS", "") + " -p no:cacheprovider").strip()
    assignments = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    return f"cd {shlex.quote(cwd)} || exit 125\nexec env -i {assignments} {shlex.join(argv)}\n"


def memory_dir(exchange_dir: Path) -> Path:
    """Where UML keeps its (unlinked) RAM file: /dev/shm when usable (UML wants tmpfs), else the exchange."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return Path(tempfile.mkdtemp(prefix="kp-uml-mem-", dir=shm))
    return exchange_dir


def adopt_orphans() -> None:
    """Become the reaper of UML's helper processes: they outlive the kernel process by a moment, and would
    otherwise be left as zombies of a PID 1 that (in containers) may never reap them."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def reap_orphans(limit_seconds: float = 5.0) -> None:
    """Collect exited children (UML's helpers, SIGKILLed with their group), for at most a few seconds."""
    deadline = time.monotonic() + limit_seconds
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            time.sleep(0.05)


def boot_guest(kernel: UmlKernel, exchange_dir: Path, cwd: str, mem: str, timeout: float) -> GuestRun:
    """Boot the guest, stream the command's output to our stdout, and stop the guest by pid at `timeout`."""
    mem_dir = memory_dir(exchange_dir)
    adopt_orphans()
    argv = [
        kernel.binary,
        f"mem={mem}",
        "root=/dev/root",
        "rootfstype=hostfs",
        "rootflags=/",
        "ro",
        f"init={INIT_SCRIPT}",
        f"umid=kp-uml-{os.getpid()}",
        f"uml_dir={exchange_dir}",
        "con=null",
        "con0=null,fd:1",
        "ssl=null",
        "quiet",
        "loglevel=3",
        f"KP_UML_DIR={exchange_dir}",
        f"KP_UML_CWD={cwd}",
    ]
    started = time.monotonic()
    boot_seconds = 0.0
    booted = threading.Event()
    boot_log: collections.deque[str] = collections.deque(maxlen=BOOT_LOG_LINES)
    env = {**os.environ, "TMPDIR": str(mem_dir)}
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )

    def relay() -> None:
        nonlocal boot_seconds
        assert proc.stdout is not None
        passing = False
        for raw in proc.stdout:
            line = raw.decode(errors="replace")
            if line.strip() == START_MARKER:
                boot_seconds = time.monotonic() - started
                booted.set()
                passing = True
            elif line.strip() == END_MARKER:
                passing = False
            elif passing:
                sys.stdout.write(line)
                sys.stdout.flush()
            else:
                boot_log.append(line.rstrip("\n"))

    reader = threading.Thread(target=relay, daemon=True)
    reader.start()
    timed_out = False
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        reap_orphans()
        reader.join(timeout=5)
        if mem_dir != exchange_dir:
            shutil.rmtree(mem_dir, ignore_errors=True)
    rc_file = exchange_dir / "rc"
    exit_code = int(rc_file.read_text().strip()) if rc_file.is_file() else None
    return GuestRun(
        booted=booted.is_set(),
        exit_code=exit_code,
        timed_out=timed_out,
        boot_seconds=boot_seconds,
        total_seconds=time.monotonic() - started,
        boot_log=tuple(boot_log),
    )


def run(argv: list[str], cwd: str, mem: str, timeout: float, modules: tuple[str, ...]) -> int:
    try:
        kernel = find_kernel()
    except UmlUnavailable as exc:
        print(f"SKIP (no IP_VS kernel): {exc}", flush=True)
        return 0
    exchange_dir = Path(tempfile.mkdtemp(prefix="kp-uml-"))
    try:
        (exchange_dir / "command").write_text(guest_command_script(argv, cwd))
        (exchange_dir / "modules").write_text(" ".join(modules) + "\n")
        result = boot_guest(kernel, exchange_dir, cwd, mem, timeout)
    finally:
        shutil.rmtree(exchange_dir, ignore_errors=True)
    summary = (
        f"kp-uml: kernel {kernel.version}, boot {result.boot_seconds:.1f}s, total {result.total_seconds:.1f}s"
    )
    if result.timed_out:
        print(f"{summary}: killed after the {timeout:.0f}s limit", file=sys.stderr)
        return EXIT_TIMEOUT
    if not result.booted:
        reason = next((line for line in reversed(result.boot_log) if line.strip()), "no output")
        print(f"SKIP (no IP_VS kernel): the UML kernel did not boot here: {reason}", flush=True)
        return 0
    if result.exit_code is None:
        print(f"{summary}: the guest stopped before the command finished", file=sys.stderr)
        print("\n".join(result.boot_log), file=sys.stderr)
        return EXIT_GUEST_DIED
    print(f"{summary}, command exit {result.exit_code}", file=sys.stderr)
    return result.exit_code


def _stop_on_signal(signum: int, _frame: object) -> None:
    """SIGTERM/SIGHUP end the run like Ctrl-C, so the guest (in its own session) is killed on the way out."""
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _stop_on_signal)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--timeout", type=float, default=900.0, help="kill the guest after this many seconds")
    parser.add_argument("--mem", default="768M", help="guest RAM, e.g. 512M or 2G")
    parser.add_argument("--module", action="append", default=[], help="an extra module to load at boot")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARG...]")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to run after --")
    try:
        return run(command, os.getcwd(), args.mem, args.timeout, DEFAULT_MODULES + tuple(args.module))
    except KeyboardInterrupt as stop:
        print(f"kp-uml: interrupted ({stop or 'Ctrl-C'}); the guest was stopped", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
