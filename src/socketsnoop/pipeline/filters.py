"""Filters: validated from the command line or config file, applied in the kernel.

Within one kind the values are OR-ed, across kinds AND-ed. The kernel program
reads them from maps filled once before attaching (hash sets for pids, comms
and ports, an LPM trie for address prefixes) and from read-only switches, so
an event filtered out costs no buffer space and no Python time.
"""

import ipaddress
import pwd
import re
from dataclasses import dataclass, field

from ..errors import SnoopError
from ..kernel import abi
from ..kernel.abi import (
    ADDR_DST,
    ADDR_EITHER,
    ADDR_EXCLUDE,
    ADDR_SRC,
    CGROUP_LEVELS,
    COMM_LEN,
    EV_RESET_RECEIVED,
    EV_RESET_SENT,
    EV_RETRANSMIT,
    FILT_ADDR,
    FILT_CGROUP,
    FILT_COMM,
    FILT_DPORT,
    FILT_DST,
    FILT_FAILED,
    FILT_IPV4,
    FILT_IPV6,
    FILT_NO_RESET,
    FILT_NO_RETRANSMIT,
    FILT_PID,
    FILT_PORT,
    FILT_SKIP_UNSPEC,
    FILT_SPORT,
    FILT_SRC,
    FILT_STATE,
    FILT_UID,
    FILT_X_ADDR,
    FILT_X_CGROUP,
    FILT_X_COMM,
    FILT_X_PID,
    FILT_X_PORT,
    FILT_X_UID,
    FILTER_KEY,
    FILTER_KEY_PREFIX_BITS,
    FV_EXCLUDE,
    FV_INCLUDE,
)
from .decode import STATE_NUMBERS
from .identity import container_of, unit_of, units_of


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


def parse_cgroup(value, option="--cgroup"):
    """A cgroup v2 path as the `cgroup` key shows it ('/system.slice/nginx.service'), or its full path under
    the cgroup2 mount (kept as given: resolve_cgroups() tells them apart)."""
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


@dataclass
class Filters:
    pids: set = field(default_factory=set)
    comms: set = field(default_factory=set)
    ports: set = field(default_factory=set)
    src_ports: set = field(default_factory=set)
    dst_ports: set = field(default_factory=set)
    addrs: list = field(default_factory=list)
    srcs: list = field(default_factory=list)
    dsts: list = field(default_factory=list)
    states: set = field(default_factory=set)
    ipv4_only: bool = False
    ipv6_only: bool = False
    no_retransmits: bool = False
    no_resets: bool = False
    include_unspecified: bool = False
    failed: bool = False  # connection records whose result is not "closed"
    exclude_pids: set = field(default_factory=set)
    exclude_comms: set = field(default_factory=set)
    exclude_ports: set = field(default_factory=set)
    exclude_addrs: list = field(default_factory=list)
    uids: set = field(default_factory=set)
    exclude_uids: set = field(default_factory=set)
    cgroups: list = field(default_factory=list)  # paths as given (parse_cgroup)
    exclude_cgroups: list = field(default_factory=list)
    units: list = field(default_factory=list)
    exclude_units: list = field(default_factory=list)
    containers: list = field(default_factory=list)  # id prefixes
    exclude_containers: list = field(default_factory=list)
    # resolve_cgroups(): cgroup id -> (depth below the v2 root, FV_INCLUDE | FV_EXCLUDE)
    cgroup_ids: dict = field(default_factory=dict)

    def wants_cgroups(self):
        return bool(self.cgroups or self.units or self.containers or self.exclude_cgroups or self.exclude_units
                    or self.exclude_containers)

    def resolve_cgroups(self, tree):
        """--cgroup, --unit, --container and their exclusions as cgroup ids, from the cgroup v2 hierarchy
        (pipeline/identity.CgroupTree). Anything not found is a one-line error (exit 2)."""
        if not self.wants_cgroups():
            return self
        if tree.mount is None:
            raise SnoopError("socket-snoop: --cgroup, --unit and --container need cgroup v2, and this host has "
                             "no cgroup2 mount (/proc/self/mountinfo)", status=2)
        ids = {}

        def add(paths, bit):
            for path in paths:
                cid, level = tree.id_of(path)
                if level >= CGROUP_LEVELS:
                    raise SnoopError(f"socket-snoop: cgroup {path} is {level} levels deep: at most "
                                     f"{CGROUP_LEVELS - 1} are supported", status=2)
                ids[cid] = (level, ids.get(cid, (level, 0))[1] | bit)

        for bit, cgroups, units, containers, pre in (
                (FV_INCLUDE, self.cgroups, self.units, self.containers, "--"),
                (FV_EXCLUDE, self.exclude_cgroups, self.exclude_units, self.exclude_containers, "--exclude-")):
            paths = []
            for path in cgroups:
                rel = tree.relative(path)
                if rel is None:
                    raise SnoopError(f"socket-snoop: {pre}cgroup: no cgroup {path} (under {tree.mount})", status=2)
                paths.append(rel)
            for unit in units:
                found = tree.find_unit(unit)
                if not found:
                    raise SnoopError(f"socket-snoop: {pre}unit: no unit {unit} in the cgroup tree "
                                     f"({tree.mount})", status=2)
                paths += found
            for prefix in containers:
                found = tree.find_container(prefix)
                if not found:
                    raise SnoopError(f"socket-snoop: {pre}container: no container {prefix} in the cgroup tree "
                                     f"({tree.mount})", status=2)
                if len(found) > 1:
                    raise SnoopError(f"socket-snoop: {pre}container: {prefix} matches more than one container: "
                                     + ", ".join(sorted(found)), status=2)
                paths += next(iter(found.values()))
            add(paths, bit)
        self.cgroup_ids = ids
        return self

    def cgroup_levels(self):
        """The depths a cgroup filter names: the kernel looks only there (rodata cgroup_levels)."""
        mask = 0
        for level, _bits in self.cgroup_ids.values():
            mask |= 1 << level
        return mask

    def flags(self):
        f = 0
        include_cg = any(bits & FV_INCLUDE for _l, bits in self.cgroup_ids.values())
        exclude_cg = any(bits & FV_EXCLUDE for _l, bits in self.cgroup_ids.values())
        for on, bit in (
            (self.exclude_pids, FILT_X_PID), (self.exclude_comms, FILT_X_COMM), (self.exclude_ports, FILT_X_PORT),
            (self.exclude_addrs, FILT_X_ADDR), (self.uids, FILT_UID), (self.exclude_uids, FILT_X_UID),
            (include_cg, FILT_CGROUP), (exclude_cg, FILT_X_CGROUP),
            (self.pids, FILT_PID), (self.comms, FILT_COMM), (self.ports, FILT_PORT),
            (self.src_ports, FILT_SPORT), (self.dst_ports, FILT_DPORT), (self.addrs, FILT_ADDR),
            (self.srcs, FILT_SRC), (self.dsts, FILT_DST), (self.states, FILT_STATE),
            (self.ipv4_only, FILT_IPV4), (self.ipv6_only, FILT_IPV6),
            (self.no_retransmits, FILT_NO_RETRANSMIT), (self.no_resets, FILT_NO_RESET),
            (not self.include_unspecified, FILT_SKIP_UNSPEC), (self.failed, FILT_FAILED),
        ):
            if on:
                f |= bit
        return f

    def state_mask(self):
        mask = 0
        for s in self.states:
            mask |= 1 << s
        return mask

    def check(self):
        if self.ipv4_only and self.ipv6_only:
            raise SnoopError("socket-snoop: -4/--ipv4 and -6/--ipv6 exclude each other: give neither for both",
                             status=2)
        return self

    def map_entries(self):
        """(map name, key bytes, value bytes) for every filter value."""
        one = b"\x01"
        for name, key, inc, exc in ((abi.MAP_FILTER_PIDS, abi.U32_KEY.pack, self.pids, self.exclude_pids),
                                    (abi.MAP_FILTER_COMMS, lambda c: c.ljust(COMM_LEN, b"\0"), self.comms,
                                     self.exclude_comms),
                                    (abi.MAP_FILTER_UIDS, abi.U32_KEY.pack, self.uids, self.exclude_uids)):
            for value in inc | exc:
                bits = (FV_INCLUDE if value in inc else 0) | (FV_EXCLUDE if value in exc else 0)
                yield name, key(value), bytes((bits,))
        for cid, (_level, bits) in self.cgroup_ids.items():
            yield abi.MAP_FILTER_CGROUPS, abi.U64_KEY.pack(cid), bytes((bits,))
        words = {}  # filter_ports: the bitmap's words that have a bit set
        for kind, ports in ((ADDR_EITHER, self.ports), (ADDR_SRC, self.src_ports), (ADDR_DST, self.dst_ports),
                            (ADDR_EXCLUDE, self.exclude_ports)):
            for port in ports:
                bit = kind << abi.PORT_KEY_KIND_SHIFT | port
                words[bit >> 6] = words.get(bit >> 6, 0) | 1 << (bit & 63)
        for word, bits in sorted(words.items()):
            yield abi.MAP_FILTER_PORTS, abi.U32_KEY.pack(word), abi.U64_KEY.pack(bits)
        for kind, nets in ((ADDR_EITHER, self.addrs), (ADDR_SRC, self.srcs), (ADDR_DST, self.dsts),
                           (ADDR_EXCLUDE, self.exclude_addrs)):
            for net in nets:
                family = net.version
                yield abi.MAP_FILTER_ADDRS, FILTER_KEY.pack(
                    FILTER_KEY_PREFIX_BITS + net.prefixlen, kind, family, net.network_address.packed.ljust(16, b"\0")), one

    def match_owner(self, pid, comm: bytes, uid=None, user=None):
        """The owner filters (pid, comm, uid, and their exclusions), for an owner that only user space could
        resolve, or a logged event (which may carry a uid, or only a user name, or neither)."""
        if (self.pids and pid not in self.pids) or pid in self.exclude_pids:
            return False
        name = comm.split(b"\0", 1)[0]
        if (self.comms and name not in self.comms) or name in self.exclude_comms:
            return False
        if self.uids or self.exclude_uids:
            if uid is None and user is not None:
                uid = _uid_of_name(user)
            if (self.uids and uid not in self.uids) or (uid is not None and uid in self.exclude_uids):
                return False
        return True

    def match_context(self, cgroup=None, unit=None, container=None):
        """The cgroup filters for a logged event: its cgroup path (JSON), else its unit and container
        (the text log's --context). --cgroup matches the path or a path below it."""
        if not self.wants_cgroups():
            return True

        def under(path, parent):
            return path is not None and (path == parent or path.startswith(parent.rstrip("/") + "/"))

        def has_unit(u):
            if cgroup is not None:
                return u in units_of(cgroup)
            return unit == u

        def has_container(prefix):
            c = container if container is not None else (container_of(cgroup) if cgroup else None)
            return c is not None and (c.startswith(prefix) or (len(c) < len(prefix) and prefix.startswith(c)))

        if unit is None and cgroup is not None:
            unit = unit_of(cgroup)
        if any(under(cgroup, p) for p in self.exclude_cgroups) or any(map(has_unit, self.exclude_units)) or \
                any(map(has_container, self.exclude_containers)):
            return False
        if self.cgroups or self.units or self.containers:
            return (any(under(cgroup, p) for p in self.cgroups) or any(map(has_unit, self.units))
                    or any(map(has_container, self.containers)))
        return True

    def match(self, kind, family, src, sport, dst, dport, pid, comm: bytes, newstate, uid=None, user=None,
              cgroup=None, unit=None, container=None):
        """The kernel's test (bpf: passes_filters()), in Python, for a logged event: `kind` an events type
        number, src/dst ipaddress objects (IPv4-mapped IPv6 counts as IPv4), comm the raw name; the
        identity fields as far as the log has them."""
        if not self.include_unspecified and (src.is_unspecified or dst.is_unspecified):
            return False
        if (self.ipv4_only and family != 4) or (self.ipv6_only and family != 6):
            return False
        if self.no_retransmits and kind == EV_RETRANSMIT:
            return False
        if self.no_resets and kind in (EV_RESET_SENT, EV_RESET_RECEIVED):
            return False
        if self.states and newstate not in self.states:
            return False
        if self.ports and sport not in self.ports and dport not in self.ports:
            return False
        if (self.src_ports and sport not in self.src_ports) or (self.dst_ports and dport not in self.dst_ports):
            return False
        src, dst = _plain(src), _plain(dst)
        if self.addrs and not (_in(src, self.addrs) or _in(dst, self.addrs)):
            return False
        if (self.srcs and not _in(src, self.srcs)) or (self.dsts and not _in(dst, self.dsts)):
            return False
        if self.exclude_ports and (sport in self.exclude_ports or dport in self.exclude_ports):
            return False
        if self.exclude_addrs and (_in(src, self.exclude_addrs) or _in(dst, self.exclude_addrs)):
            return False
        return self.match_owner(pid, comm, uid, user) and self.match_context(cgroup, unit, container)


def _plain(ip):
    return ip.ipv4_mapped or ip if ip.version == 6 else ip


def _in(ip, nets):
    return any(ip.version == n.version and ip in n for n in nets)


def _uid_of_name(name):
    try:
        return pwd.getpwnam(name).pw_uid
    except (KeyError, ValueError):
        return None
