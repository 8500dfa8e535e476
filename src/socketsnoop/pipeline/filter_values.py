"""A filter's values as given on the command line or in the config file: each checked and converted here,
one line (exit 2) for a bad one. Used by the filter declarations (filters.py)."""

import ipaddress
import pwd
import re

from ..errors import SnoopError
from ..kernel.abi import COMM_LEN
from .decode import STATE_NUMBERS


def _bad(option, value, why):
    return SnoopError(f"socket-snoop: {option}: invalid value {value!r}: {why}", status=2)


def parse_pid(value, option="--pid"):
    try:
        pid = int(str(value), 10)
    except ValueError:
        raise _bad(option, value, "a process id is a whole number") from None
    if not 0 < pid < 2**22 + 1:
        raise _bad(option, value, "a process id is between 1 and 4194304")
    return pid


def parse_port(value, option="--port"):
    try:
        port = int(str(value), 10)
    except ValueError:
        raise _bad(option, value, "a port is a whole number") from None
    if not 0 <= port <= 65535:
        raise _bad(option, value, "a port is between 0 and 65535")
    return port


def parse_cidr(value, option="--addr"):
    """'10.0.0.0/8', '2001:db8::/32', or a bare address (/32 or /128)."""
    try:
        net = ipaddress.ip_network(str(value).strip("[]"), strict=False)
    except ValueError:
        raise _bad(option, value, "expected an IPv4 or IPv6 address or CIDR, e.g. 10.0.0.0/8") from None
    if isinstance(net, ipaddress.IPv6Network) and net.network_address.ipv4_mapped and net.prefixlen >= 96:
        net = ipaddress.ip_network(f"{net.network_address.ipv4_mapped}/{net.prefixlen - 96}")
    return net


def parse_state(value, option="--state"):
    name = str(value).upper().replace("-", "_")
    if name == "CLOSED":
        name = "CLOSE"
    if name not in STATE_NUMBERS:
        raise _bad(option, value, "known states: " + ", ".join(STATE_NUMBERS))
    return STATE_NUMBERS[name]


def parse_comm(value, option="--comm"):
    raw = str(value).encode()
    if not raw or len(raw) > COMM_LEN - 1:
        raise _bad(option, value, "a command name is 1 to 15 bytes (the kernel's limit)")
    return raw


def parse_uid(value, option="--uid"):
    """A uid, or a user name of this host's (resolved now: a name that does not exist is an error)."""
    text = str(value)
    if text.isascii() and text.isdigit():
        uid = int(text)
        if uid >= 2**32 - 1:
            raise _bad(option, value, "a uid is below 4294967295")
        return uid
    try:
        return pwd.getpwnam(text).pw_uid
    except (KeyError, ValueError):
        raise _bad(option, value, "no such user on this host (give a uid or a user name)") from None


def uid_of_name(name):
    """A logged user name's uid on this host, or None."""
    try:
        return pwd.getpwnam(name).pw_uid
    except (KeyError, ValueError):
        return None


def parse_cgroup(value, option="--cgroup"):
    """A cgroup v2 path as the `cgroup` key shows it ('/system.slice/nginx.service'), or its full path under
    the cgroup2 mount (kept as given: Filters.resolve_cgroups() tells them apart)."""
    text = str(value).strip()
    if not text.startswith("/") or "\0" in text or any(p in (".", "..") for p in text.split("/")):
        raise _bad(option, value, "a cgroup path begins with '/', e.g. /system.slice/nginx.service")
    return "/" + "/".join(p for p in text.split("/") if p)


_UNIT = re.compile(r"[A-Za-z0-9:_.@\\-]+", re.ASCII)


def parse_unit(value, option="--unit"):
    """A systemd unit's name; without a suffix, '.service' (as systemctl takes it)."""
    text = str(value)
    if not _UNIT.fullmatch(text) or text in (".", ".."):
        raise _bad(option, value, "a systemd unit name, e.g. nginx.service or session-3.scope")
    return text if "." in text else text + ".service"


def parse_container(value, option="--container"):
    """A container id, or a prefix of it of at least 12 hex digits."""
    text = str(value).lower()
    if not re.fullmatch(r"[0-9a-f]{12,64}", text):
        raise _bad(option, value, "a container id: 12 to 64 hex digits (a unique prefix of the id)")
    return text
