"""Named network namespaces, and running Python code inside one without touching the caller's thread.

Linux keeps the network namespace per thread, so `in_netns` runs a function on a fresh thread that first
`setns`es into the target: sockets (netlink ones included) created there stay in that namespace for life, and
/proc/sys/net opened there is that namespace's. The caller's thread never changes namespace, so there is
nothing to restore if anything fails. Namespaces are created the way iproute2 does (a bind mount of the
namespace file under a shared /run/netns), on one thread for a whole batch, which avoids a fork per namespace.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from kubeplane.netns.names import NETNS_DIR

log = logging.getLogger(__name__)

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
MS_BIND = 4096
MS_REC = 16384
MS_SHARED = 1 << 20
MNT_DETACH = 2

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_rundir_lock = threading.Lock()


class NetnsError(OSError):
    """A namespace could not be created, entered or removed."""


def _check(result: int, what: str, netns: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise NetnsError(code, f"{what} {netns}: {os.strerror(code)}")


def netns_path(netns: str) -> Path:
    return NETNS_DIR / netns


def netns_exists(netns: str) -> bool:
    return netns_path(netns).exists()


def list_netns(prefix: str = "") -> list[str]:
    """Named namespaces (as `ip netns list` shows them) whose name starts with `prefix`."""
    try:
        return sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(prefix))
    except FileNotFoundError:
        return []


def _prepare_rundir() -> None:
    """Make /run/netns a shared mount point, as iproute2 does, so namespace mounts propagate everywhere."""
    with _rundir_lock:
        NETNS_DIR.mkdir(parents=True, exist_ok=True)
        target = str(NETNS_DIR).encode()
        if _libc.mount(b"none", target, None, MS_SHARED | MS_REC, None) == 0:
            return
        _check(_libc.mount(target, target, b"none", MS_BIND | MS_REC, None), "bind-mount", str(NETNS_DIR))
        _check(_libc.mount(b"none", target, None, MS_SHARED | MS_REC, None), "share", str(NETNS_DIR))


def _enter(netns: str) -> None:
    fd = os.open(netns_path(netns), os.O_RDONLY | os.O_CLOEXEC)
    try:
        enter_netns_fd(fd, netns)
    finally:
        os.close(fd)


def enter_netns_fd(fd: int, what: str) -> None:
    """Move the calling thread into the network namespace `fd` refers to (`what` names it in errors)."""
    _check(_libc.setns(fd, CLONE_NEWNET), "setns", what)


def _run_on_thread(target: Callable[[], T], name: str) -> T:
    result: list[T] = []
    failure: list[BaseException] = []

    def body() -> None:
        try:
            result.append(target())
        except BaseException as err:  # handed to the caller's thread below
            failure.append(err)

    thread = threading.Thread(target=body, name=name, daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


def create_netns(netnses: Iterable[str]) -> None:
    """Create each named namespace (NetnsError if one exists already), all on one short-lived thread."""
    wanted = list(netnses)
    _prepare_rundir()

    def create_all() -> None:
        for netns in wanted:
            path = netns_path(netns)
            try:
                os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
            except FileExistsError as err:
                raise NetnsError(errno.EEXIST, f"netns {netns} exists already") from err
            _check(_libc.unshare(CLONE_NEWNET), "unshare for", netns)
            source = b"/proc/thread-self/ns/net"
            _check(_libc.mount(source, str(path).encode(), b"none", MS_BIND, None), "bind-mount", netns)

    _run_on_thread(create_all, "netns-create")


def remove_netns(netns: str) -> bool:
    """Unmount and unlink a named namespace; the kernel frees it once no process or socket holds it.
    Returns False when it did not exist."""
    path = netns_path(netns)
    if not path.exists():
        return False
    if _libc.umount2(str(path).encode(), MNT_DETACH) != 0:
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOENT):  # EINVAL: a leftover file that is not a mount point
            raise NetnsError(code, f"umount {netns}: {os.strerror(code)}")
    path.unlink(missing_ok=True)
    return True


def in_netns(netns: str, function: Callable[[], T]) -> T:
    """Run `function` on a new thread inside `netns` and return its result (or raise its exception)."""

    def entered() -> T:
        _enter(netns)
        return function()

    return _run_on_thread(entered, f"in-{netns}")


def write_sysctl(key: str, value: str) -> None:
    """Write net.* sysctl `key` (dotted) in the calling thread's namespace; call it inside `in_netns`."""
    path = Path("/proc/sys") / key.replace(".", "/")
    path.write_text(value)


def bound_socket(
    family: int, type: int, addr: tuple[str, int] | None = None, reuse_port: bool = False
) -> socket.socket:
    """A non-blocking socket in the calling thread's namespace (bound to `addr` if given; streams are not
    yet listening). AF_INET6 sockets are IPv6-only: a dual-stack server opens one socket per family, and
    IPv4 peers keep their plain addresses."""
    sock = socket.socket(family, type)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if addr is not None:
            sock.bind(addr)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def open_socket_in_netns(
    netns: str, family: int, type: int, addr: tuple[str, int] | None = None, reuse_port: bool = False
) -> socket.socket:
    """`bound_socket`, made inside `netns`.

    Used by the workload engine and by the daemon's DNS server: the socket can then be served from any event
    loop in any thread, because a socket keeps the namespace it was created in."""
    return in_netns(netns, lambda: bound_socket(family, type, addr, reuse_port))
