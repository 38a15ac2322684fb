"""Clients that run inside a lab namespace without a subprocess: HTTP GET, UDP echo, TCP echo, DNS lookup.

Each call runs on a thread that entered the namespace (nsfs.in_netns), so its sockets are that namespace's
sockets and packets start where a pod's would. Host names in URLs are resolved the way the pod's libc would:
with the namespace's /etc/netns/<netns>/resolv.conf (search list, ndots, nameservers), by DNS queries sent
from inside the namespace. Network failures surface as the usual OSError subclasses (ConnectionRefusedError,
TimeoutError, ...) so tests can assert on them.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from dnslib import QTYPE, DNSRecord

from kubeplane.netns import names
from kubeplane.netns.nsfs import in_netns


class ResponseError(RuntimeError):
    """The peer answered, but not with what the caller asked for (status, JSON)."""


Family = Literal["IPv4", "IPv6"]
_RECORD_TYPES: dict[Family, str] = {"IPv4": "A", "IPv6": "AAAA"}


class NameResolutionError(OSError):
    """No nameserver of the namespace's resolv.conf gave an A (or AAAA) record for the name."""


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError as err:
            raise ResponseError(f"HTTP {self.status}: body is not JSON: {self.body[:200]!r}") from err


@dataclass(frozen=True)
class ResolvConf:
    nameservers: tuple[str, ...]
    search: tuple[str, ...]
    ndots: int

    @classmethod
    def parse(cls, text: str) -> ResolvConf:
        nameservers: list[str] = []
        search: tuple[str, ...] = ()
        ndots = 1
        for line in text.splitlines():
            words = line.split()
            if not words or words[0].startswith(("#", ";")):
                continue
            if words[0] == "nameserver" and len(words) > 1:
                nameservers.append(words[1])
            elif words[0] in ("search", "domain"):
                search = tuple(words[1:])
            elif words[0] == "options":
                for option in words[1:]:
                    if option.startswith("ndots:"):
                        ndots = int(option.split(":", 1)[1])
        return cls(tuple(nameservers), search, ndots)

    def candidates(self, name: str) -> list[str]:
        """The names glibc would try, in order."""
        if name.endswith("."):
            return [name]
        searched = [f"{name}.{domain}." for domain in self.search]
        if name.count(".") >= self.ndots:
            return [f"{name}.", *searched]
        return [*searched, f"{name}."]


def _socket_family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def _query(name: str, nameserver: str, record_type: str, timeout: float) -> str | None:
    query = DNSRecord.question(name, record_type)
    with socket.socket(_socket_family(nameserver), socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(query.pack(), (nameserver, 53))
        while True:
            data, _ = sock.recvfrom(65535)
            reply = DNSRecord.parse(data)
            if reply.header.id == query.header.id:
                break
    for answer in reply.rr:
        if answer.rtype == getattr(QTYPE, record_type):
            return str(answer.rdata)
    return None


def _resolve_here(netns: str, host: str, timeout: float, family: Family = "IPv4") -> str:
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    record_type = _RECORD_TYPES[family]
    path = names.etc_netns_dir(netns) / "resolv.conf"
    try:
        conf = ResolvConf.parse(path.read_text())
    except FileNotFoundError as err:
        raise NameResolutionError(f"{host}: {netns} has no resolv.conf ({path})") from err
    for candidate in conf.candidates(host):
        for nameserver in conf.nameservers:
            try:
                address = _query(candidate, nameserver, record_type, timeout)
            except OSError:
                continue
            if address is not None:
                return address
    raise NameResolutionError(
        f"{host}: no {record_type} record via {', '.join(conf.nameservers)} from {netns}"
    )


def resolve(netns: str, host: str, timeout: float = 2.0, family: Family = "IPv4") -> str:
    """The address of `family` (A or AAAA record) `host` resolves to from inside `netns`; an IP literal
    is returned as is."""
    return in_netns(netns, lambda: _resolve_here(netns, host, timeout, family))


def _read_response(sock: socket.socket) -> HttpResponse:
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise ResponseError(f"connection closed before an HTTP response head: {buffer[:200]!r}")
        buffer += chunk
    head, body = buffer.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split(" ", 2)[1])
    except (IndexError, ValueError) as err:
        raise ResponseError(f"not an HTTP status line: {lines[0]!r}") from err
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
    length = headers.get("content-length")
    while length is None or len(body) < int(length):
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return HttpResponse(status, headers, body)


def http_request(netns: str, url: str, timeout: float = 5.0, source_port: int = 0) -> HttpResponse:
    """GET `url` from inside `netns` (HTTP/1.1, Connection: close). A host name is resolved to its IPv4
    address; IPv6 literals go in brackets (`http://[fd00:10:96::a]:80/`)."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"{url}: only http://host[:port]/path URLs are supported")
    host, port = parts.hostname, parts.port or 80
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"

    def run() -> HttpResponse:
        address = _resolve_here(netns, host, timeout)
        with socket.socket(_socket_family(address), socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            if source_port:
                sock.bind(("::" if ":" in address else "0.0.0.0", source_port))
            sock.connect((address, port))
            request = f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n"
            sock.sendall(request.encode())
            return _read_response(sock)

    return in_netns(netns, run)


def http_get(netns: str, url: str, timeout: float = 5.0) -> dict[str, Any]:
    """GET `url` from inside `netns` and return its JSON body (the echo's identity); non-200 raises."""
    response = http_request(netns, url, timeout)
    if response.status != 200:
        raise ResponseError(f"GET {url} from {netns}: HTTP {response.status}: {response.body[:200]!r}")
    body = response.json()
    if not isinstance(body, dict):
        raise ResponseError(f"GET {url} from {netns}: JSON body is not an object")
    return body


def udp_echo(
    netns: str, ip: str, port: int, payload: bytes = b"ping", timeout: float = 2.0
) -> dict[str, Any]:
    """Send one datagram from inside `netns` and return the UDP echo's JSON reply."""

    def run() -> dict[str, Any]:
        address = _resolve_here(netns, ip, timeout)
        with socket.socket(_socket_family(address), socket.SOCK_DGRAM) as sock:
            sock.settimeout(timeout)
            sock.connect((address, port))
            sock.send(payload)
            data = sock.recv(65535)
        reply = json.loads(data)
        if not isinstance(reply, dict):
            raise ResponseError(f"UDP {ip}:{port} from {netns}: reply is not a JSON object")
        return reply

    return in_netns(netns, run)


def tcp_connect(netns: str, ip: str, port: int, payload: bytes = b"ping\n", timeout: float = 2.0) -> bytes:
    """Connect from inside `netns`, send `payload` and return the bytes echoed back (b"" for no payload:
    then it only proves the connection was accepted)."""

    def run() -> bytes:
        address = _resolve_here(netns, ip, timeout)
        with socket.create_connection((address, port), timeout=timeout) as sock:
            if not payload:
                return b""
            sock.sendall(payload)
            received = b""
            while len(received) < len(payload):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
            return received

    return in_netns(netns, run)
