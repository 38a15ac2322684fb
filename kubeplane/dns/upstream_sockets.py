"""Sockets to upstream resolvers, opened in the network namespace the server listens in.

A CoreDNS pod forwards from the pod's own namespace: its resolv.conf, its routes, its loopback. The daemon
serves DNS on sockets it opened inside the `kube-system/coredns` pod's namespace, while the process itself
stays in the root namespace, so sockets it opens for forwarding would leave from the wrong place. Linux
tells a socket's namespace (ioctl SIOCGSKNS); when it differs from the process's, a worker thread enters
it once (setns) and makes every upstream socket there; a socket keeps the namespace it was created in.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import socket
from concurrent.futures import ThreadPoolExecutor

from kubeplane.netns.nsfs import enter_netns_fd

log = logging.getLogger(__name__)

SIOCGSKNS = 0x894C  # linux/sockios.h: a new fd for the network namespace of a socket


class UpstreamSockets:
    """Makes non-blocking sockets in the process's namespace, or in the one of `like` (see module doc)."""

    def __init__(self, like: socket.socket | None = None) -> None:
        self._namespace_fd: int | None = None
        self._executor: ThreadPoolExecutor | None = None
        if like is None:
            return
        try:
            namespace_fd = fcntl.ioctl(like.fileno(), SIOCGSKNS)
        except OSError as error:  # an old kernel, or no right to ask: stay where we are
            log.debug("dns upstream sockets stay in this namespace error=%s", error)
            return
        if os.fstat(namespace_fd).st_ino == os.stat("/proc/self/ns/net").st_ino:
            os.close(namespace_fd)
            return
        self._namespace_fd = namespace_fd
        self._executor = ThreadPoolExecutor(
            1,
            "dns-upstream",
            initializer=enter_netns_fd,
            initargs=(namespace_fd, "of the DNS server's socket"),
        )

    async def open(self, family: int, kind: int) -> socket.socket:
        """A new non-blocking socket of `family` and `kind` (SOCK_DGRAM, SOCK_STREAM)."""
        if self._executor is None:
            return _new_socket(family, kind)
        return await asyncio.get_running_loop().run_in_executor(self._executor, _new_socket, family, kind)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None
        if self._namespace_fd is not None:
            os.close(self._namespace_fd)
            self._namespace_fd = None


def _new_socket(family: int, kind: int) -> socket.socket:
    sock = socket.socket(family, kind)
    sock.setblocking(False)
    return sock
