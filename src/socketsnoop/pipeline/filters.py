"""Filters: validated from the command line or config file, applied in the kernel.

Within one kind the values are OR-ed, across kinds AND-ed. The kernel program
reads them from maps filled once before attaching (hash sets for pids, comms
and ports, an LPM trie for address prefixes) and from read-only switches, so
an event filtered out costs no buffer space and no Python time.
"""

import ipaddress
from dataclasses import dataclass, field

from ..errors import SnoopError
from ..kernel import abi
from ..kernel.abi import (
    ADDR_DST,
    ADDR_EITHER,
    ADDR_SRC,
    COMM_LEN,
    EV_RESET_RECEIVED,
    EV_RESET_SENT,
    EV_RETRANSMIT,
    FILT_ADDR,
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
    FILTER_KEY,
    FILTER_KEY_PREFIX_BITS,
)
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

    def flags(self):
        f = 0
        for on, bit in (
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
        for pid in self.pids:
            yield abi.MAP_FILTER_PIDS, abi.U32_KEY.pack(pid), one
        for comm in self.comms:
            yield abi.MAP_FILTER_COMMS, comm.ljust(COMM_LEN, b"\0"), one
        for kind, ports in ((ADDR_EITHER, self.ports), (ADDR_SRC, self.src_ports), (ADDR_DST, self.dst_ports)):
            for port in ports:
                yield abi.MAP_FILTER_PORTS, abi.U32_KEY.pack(kind << abi.PORT_KEY_KIND_SHIFT | port), one
        for kind, nets in ((ADDR_EITHER, self.addrs), (ADDR_SRC, self.srcs), (ADDR_DST, self.dsts)):
            for net in nets:
                family = net.version
                yield abi.MAP_FILTER_ADDRS, FILTER_KEY.pack(
                    FILTER_KEY_PREFIX_BITS + net.prefixlen, kind, family, net.network_address.packed.ljust(16, b"\0")), one

    def match_owner(self, pid, comm: bytes):
        """The pid/comm filters, for an owner that only user space could resolve."""
        if self.pids and pid not in self.pids:
            return False
        if self.comms and comm.split(b"\0", 1)[0] not in self.comms:
            return False
        return True

    def match(self, kind, family, src, sport, dst, dport, pid, comm: bytes, newstate):
        """The kernel's test (bpf: wanted()), in Python, for a logged event: `kind` an events type
        number, src/dst ipaddress objects (IPv4-mapped IPv6 counts as IPv4), comm the raw name."""
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
        return self.match_owner(pid, comm)


def _plain(ip):
    return ip.ipv4_mapped or ip if ip.version == 6 else ip


def _in(ip, nets):
    return any(ip.version == n.version and ip in n for n in nets)
