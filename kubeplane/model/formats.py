"""Pure checks of Kubernetes value formats (names, IPs, CIDRs, durations), as the API server applies them.

Each check returns the normalised value or an explanation of what is wrong, never raises: the field readers
turn explanations into `ManifestError`s with the field path attached.
"""

from __future__ import annotations

import ipaddress
import re

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_IANA_SVC_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_QUALIFIED_NAME_PART = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def dns1123_label_problem(value: str) -> str | None:
    if len(value) > 63:
        return f"must be no more than 63 characters, got {len(value)}"
    if not _DNS1123_LABEL.match(value):
        return f"must be a lowercase RFC 1123 label (a-z, 0-9, '-', alphanumeric at both ends), got {value!r}"
    return None


def dns1035_label_problem(value: str) -> str | None:
    if len(value) > 63:
        return f"must be no more than 63 characters, got {len(value)}"
    if not _DNS1035_LABEL.match(value):
        return f"must be a lowercase RFC 1035 label (starts with a-z; a-z, 0-9, '-'), got {value!r}"
    return None


def dns1123_subdomain_problem(value: str) -> str | None:
    if len(value) > 253:
        return f"must be no more than 253 characters, got {len(value)}"
    if not all(_DNS1123_LABEL.match(part) for part in value.split(".")):
        return f"must be a lowercase RFC 1123 subdomain (a-z, 0-9, '-' labels joined by '.'), got {value!r}"
    return None


def port_name_problem(value: str) -> str | None:
    """IANA_SVC_NAME, what container and targetPort names must be: at most 15 chars, at least one letter."""
    if len(value) > 15:
        return f"must be no more than 15 characters, got {value!r}"
    if not _IANA_SVC_NAME.match(value) or "--" in value:
        return f"must be an IANA service name (a-z, 0-9, single '-'), got {value!r}"
    if not any(c.isalpha() for c in value):
        return f"must contain at least one letter, got {value!r}"
    return None


def label_key_problem(value: str) -> str | None:
    prefix, _, name = value.rpartition("/")
    if prefix and dns1123_subdomain_problem(prefix):
        return f"prefix must be a DNS subdomain, got {value!r}"
    if not name or len(name) > 63 or not _QUALIFIED_NAME_PART.match(name):
        return f"must be a qualified name (alphanumerics, '-', '_', '.', at most 63), got {value!r}"
    return None


def label_value_problem(value: str) -> str | None:
    if len(value) > 63 or not _LABEL_VALUE.match(value):
        return f"must be a valid label value (alphanumerics, '-', '_', '.', at most 63), got {value!r}"
    return None


def parse_ip(value: str) -> IPAddress | str:
    """The address, or a problem. Like the API server, leading zeros and zones (`%eth0`) are refused."""
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return f"must be a valid IP address, got {value!r}"


def parse_cidr(value: str, strict: bool = True) -> IPNetwork | str:
    """The network, or a problem; `strict`: the address must be the network's (10.0.0.0/8, not 10.0.0.1/8)."""
    try:
        network = ipaddress.ip_network(value, strict=False)
    except ValueError:
        return f"must be a valid CIDR, got {value!r}"
    if "/" not in value:
        return f"must be a CIDR with a prefix length, got {value!r}"
    if strict and str(network.network_address) != value.split("/", 1)[0]:
        return f"must be a network address (did you mean {network}?), got {value!r}"
    return network


def ip_family(address: IPAddress | IPNetwork) -> str:
    return "IPv4" if address.version == 4 else "IPv6"


def parse_duration(value: str) -> float | str:
    """Seconds from a Go duration ("1s", "500ms", "1m30s", "2h0m0s", "0"), or a problem."""
    if value == "0":
        return 0.0
    pos = 0
    seconds = 0.0
    while pos < len(value):
        match = _DURATION_PART.match(value, pos)
        if match is None:
            return f"must be a duration like '30s', '500ms' or '1m30s', got {value!r}"
        seconds += float(match.group(1)) * _DURATION_UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos == 0:
        return f"must be a duration like '30s', '500ms' or '1m30s', got {value!r}"
    return seconds


def format_duration(seconds: float) -> str:
    """A Go-style duration string that `parse_duration` reads back to the same value."""
    if seconds == 0:
        return "0s"
    if seconds < 1:
        return f"{round(seconds * 1000, 6):g}ms"
    whole = int(seconds)
    if whole != seconds:
        return f"{seconds:g}s"
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return (f"{hours}h" if hours else "") + (f"{minutes}m" if hours or minutes else "") + f"{secs}s"


def parse_host_port(value: str) -> tuple[IPAddress, int] | str:
    """An upstream resolver "ip", "ip:port" or "[ipv6]:port" (port 53 when absent), or a problem."""
    host, port_text = value, "53"
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            return f"must be 'ip', 'ip:port' or '[ipv6]:port', got {value!r}"
        port_text = rest[1:] if rest else "53"
    elif value.count(":") == 1:
        host, port_text = value.split(":")
    address = parse_ip(host)
    if isinstance(address, str):
        return f"must be 'ip', 'ip:port' or '[ipv6]:port', got {value!r}"
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        return f"port must be between 1 and 65535, got {value!r}"
    return address, int(port_text)
