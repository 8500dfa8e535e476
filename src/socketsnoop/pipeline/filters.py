"""Filters, each kind declared once (FILTERS, SWITCHES): its command-line option and its exclusion, how its
values reach the kernel (the maps and flags bpf/socketsnoop.bpf.c's passes_filters() reads), and its
user-space match. The user-space match judges what the kernel could not (the owner of a socket older than the
monitor, known only from /proc) and logged events (`report`); tests/kernel/test_filter_differential.py holds
it to the kernel's verdict on the same real events, kind by kind.

Within one kind the values are OR-ed, across kinds AND-ed; an exclusion (--exclude-*) drops an event
whatever else matches. The three ways to name a cgroup (--cgroup, --unit, --container) are one kind for the
kernel: a socket in any of them passes. The maps are filled once before attaching (hash sets for pids, comms,
uids, ports and cgroup ids, an LPM trie for address prefixes), the switches are read-only data: an event
filtered out costs no buffer space and no Python time.
"""

from typing import NamedTuple

from ..errors import SnoopError
from ..kernel import abi
from ..kernel.abi import (
    ADDR_DST,
    ADDR_EITHER,
    ADDR_SRC,
    COMM_LEN,
    EV_CONNECTION,
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
    FILT_UID,
    FILT_X_ADDR,
    FILT_X_COMM,
    FILT_X_PID,
    FILT_X_PORT,
    FILT_X_UID,
)
from .filter_values import (
    parse_cgroup,
    parse_cidr,
    parse_comm,
    parse_container,
    parse_pid,
    parse_port,
    parse_state,
    parse_uid,
    parse_unit,
    uid_of_name,
)
from .decode import TCP_STATES
from .filter_cgroups import ALL_LEVELS, resolve
from .identity import container_of, units_of

from .filter_kinds import (RUN, RUN_AND_REPORT, AddrKind, CgroupKind, Event, OwnerKind, PortKind,
                           StateKind)


def _either(ev, what):
    return (ev.sport, ev.dport) if what == "port" else (ev.src, ev.dst)


def _local(ev, what):
    return (ev.sport,) if what == "port" else (ev.src,)


def _remote(ev, what):
    return (ev.dport,) if what == "port" else (ev.dst,)


def _uid(ev):
    return ev.uid if ev.uid is not None else (uid_of_name(ev.user) if ev.user is not None else None)


def _under(ev, path):
    return ev.cgroup is not None and (ev.cgroup == path or ev.cgroup.startswith(path.rstrip("/") + "/"))


def _in_unit(ev, unit):
    return unit in units_of(ev.cgroup) if ev.cgroup is not None else ev.unit == unit


def _in_container(ev, prefix):
    c = ev.container if ev.container is not None else (container_of(ev.cgroup) if ev.cgroup else None)
    return c is not None and (c.startswith(prefix) or (len(c) < len(prefix) and prefix.startswith(c)))


FILTERS = (
    OwnerKind("pid", ("-p", "--pid"), parse_pid, "owning process id (repeatable)", FILT_PID,
              "leave out this owning process id (repeatable)", FILT_X_PID, exclude_metavar="PID",
              map_name=abi.MAP_FILTER_PIDS, pack=abi.U32_KEY.pack, value_of=lambda ev: ev.pid, example=1234),
    OwnerKind("comm", ("-c", "--comm"), parse_comm, "owning command name, exact (repeatable)", FILT_COMM,
              "leave out this owning command name", FILT_X_COMM, exclude_metavar="NAME",
              map_name=abi.MAP_FILTER_COMMS, pack=lambda c: c.ljust(COMM_LEN, b"\0"), value_of=lambda ev: ev.comm,
              example="nginx", show=lambda c: c.decode("utf-8", "surrogateescape")),
    PortKind("port", ("-P", "--port"), parse_port, "port at either end (repeatable)", FILT_PORT,
             "leave out this port, at either end", FILT_X_PORT, exclude_metavar="PORT", ends=_either,
             code=ADDR_EITHER, example=443),
    PortKind("src_port", ("--src-port",), parse_port, "local port (SRC)", FILT_SPORT, ends=_local, code=ADDR_SRC,
             example=22),
    PortKind("dst_port", ("--dst-port",), parse_port, "remote port (DST)", FILT_DPORT, ends=_remote,
             code=ADDR_DST, example=443),
    AddrKind("addr", ("-a", "--addr"), parse_cidr, "address or CIDR at either end, IPv4 or IPv6", FILT_ADDR,
             "leave out this address or CIDR, at either end", FILT_X_ADDR, exclude_metavar="CIDR", ends=_either,
             code=ADDR_EITHER, example="10.0.0.0/8"),
    AddrKind("src", ("--src",), parse_cidr, "local address or CIDR", FILT_SRC, ends=_local, code=ADDR_SRC,
             example="192.0.2.0/24"),
    AddrKind("dst", ("--dst",), parse_cidr, "remote address or CIDR", FILT_DST, ends=_remote, code=ADDR_DST,
             example="2001:db8::/32"),
    StateKind("state", ("-s", "--state"), parse_state, "new state, e.g. ESTABLISHED, SYN_SENT, CLOSE (repeatable)",
              FILT_STATE, example="ESTABLISHED", show=lambda n: TCP_STATES[n]),
    OwnerKind("uid", ("--uid",), parse_uid, "owner's uid or user name (repeatable)", FILT_UID,
              "leave out this uid or user name", FILT_X_UID, metavar="UID", exclude_metavar="UID",
              map_name=abi.MAP_FILTER_UIDS, pack=abi.U32_KEY.pack, value_of=_uid, example=1000),
    CgroupKind("cgroup", ("--cgroup",), parse_cgroup,
               "socket's cgroup v2 PATH or below, e.g. /system.slice/nginx.service",
               exclude="leave out this cgroup and everything below it", metavar="PATH", exclude_metavar="PATH",
               test=_under, example="/system.slice/nginx.service"),
    CgroupKind("unit", ("--unit",), parse_unit, "systemd unit (its cgroup and below), e.g. nginx.service",
               exclude="leave out this systemd unit", metavar="NAME", exclude_metavar="NAME", test=_in_unit,
               example="backup.service"),
    CgroupKind("container", ("--container",), parse_container,
               "container id, a unique prefix of at least 12 hex digits", exclude="leave out this container",
               metavar="ID", exclude_metavar="ID", test=_in_container, example="0123456789ab"),
)
CGROUP_KINDS = tuple(k for k in FILTERS if k.group == "cgroup")


class Switch(NamedTuple):
    """A filter without values: on when its option's value is `when` (the kernel's `bit` is then set, and
    `test` must hold in user space). commands: which commands take the option (elsewhere it does not filter)."""
    name: str
    flags: tuple
    help: str
    bit: int
    test: object
    when: bool = True
    commands: tuple = RUN_AND_REPORT


SWITCHES = (
    Switch("ipv4", ("-4", "--ipv4"), "IPv4 only", FILT_IPV4, lambda ev: ev.family == 4),
    Switch("ipv6", ("-6", "--ipv6"), "IPv6 only", FILT_IPV6, lambda ev: ev.family == 6),
    Switch("no_retransmits", ("--no-retransmits",), "no retransmission events", FILT_NO_RETRANSMIT,
           lambda ev: ev.kind != EV_RETRANSMIT),
    Switch("no_resets", ("--no-resets",), "no reset events", FILT_NO_RESET,
           lambda ev: ev.kind not in (EV_RESET_SENT, EV_RESET_RECEIVED)),
    Switch("include_unspecified", ("--include-unspecified",),
           "also show events with an unspecified address (0.0.0.0, ::), e.g. listening sockets", FILT_SKIP_UNSPEC,
           lambda ev: not (ev.src.is_unspecified or ev.dst.is_unspecified), when=False, commands=RUN),
    Switch("failed", ("--failed",), "only the summaries of connections that did not end in an orderly close "
           "(refused, timeout, unreachable, reset), filtered in the kernel", FILT_FAILED,
           lambda ev: ev.kind != EV_CONNECTION or ev.result is None or ev.result != "closed", commands=RUN),
)


class Filters:
    """The filters of one run: include/exclude values by kind name, the switches the command has (name ->
    the option's value). The kernel's side: flags(), state_mask(), cgroup_levels(), map_entries(); the user
    space's: match(), match_owner()."""

    def __init__(self, include=None, exclude=None, switches=None):
        self.include = {k: frozenset(v) for k, v in (include or {}).items() if v}
        self.exclude = {k: frozenset(v) for k, v in (exclude or {}).items() if v}
        self.switches = dict(switches or {})
        # resolve_cgroups(): cgroup id -> (depth below the v2 root, FV_INCLUDE | FV_EXCLUDE)
        self.cgroup_ids = {}
        self.cgroups_missing = []  # (option, value) of the cgroup names not in the hierarchy (yet)
        self._tests = self._compile(FILTERS)
        self._owner_tests = self._compile([k for k in FILTERS if isinstance(k, OwnerKind)], switches=False)

    def _compile(self, kinds, switches=True):
        """The user-space tests of the filters given, each ev -> bool."""
        tests = [s.test for s in SWITCHES if switches and self.switch_on(s)]
        groups = {}
        for kind in kinds:
            groups.setdefault(kind.group or kind.name, []).append(kind)
        for members in groups.values():
            inc = [(k, self.include[k.name]) for k in members if k.name in self.include]
            exc = [(k, self.exclude[k.name]) for k in members if k.name in self.exclude]
            if inc:
                tests.append(lambda ev, inc=inc: any(k.hits(ev, values) for k, values in inc))
            if exc:
                tests.append(lambda ev, exc=exc: not any(k.hits(ev, values) for k, values in exc))
        return tests

    def switch_on(self, switch):
        return switch.name in self.switches and bool(self.switches[switch.name]) == switch.when

    def check(self):
        if self.switches.get("ipv4") and self.switches.get("ipv6"):
            raise SnoopError("socket-snoop: -4/--ipv4 and -6/--ipv6 exclude each other: give neither for both",
                             status=2)
        return self

    # -- the kernel's side ------------------------------------------------------
    def wants_cgroups(self):
        return any(k.name in self.include or k.name in self.exclude for k in CGROUP_KINDS)

    def flags(self):
        f = 0
        for kind in FILTERS:
            if kind.name in self.include:
                f |= kind.bit
            if kind.name in self.exclude:
                f |= kind.exclude_bit
        for switch in SWITCHES:
            if self.switch_on(switch):
                f |= switch.bit
        return f

    def state_mask(self):
        mask = 0
        for s in self.include.get("state", ()):
            mask |= 1 << s
        return mask

    def cgroup_levels(self):
        """The depths a cgroup filter names: the kernel looks only there (rodata cgroup_levels, fixed at load).
        Every depth while a name is waited for: it may appear anywhere."""
        if self.cgroups_missing:
            return ALL_LEVELS
        mask = 0
        for level, _bits in self.cgroup_ids.values():
            mask |= 1 << level
        return mask

    def map_entries(self):
        """(map name, key bytes, value bytes) for every filter value."""
        empty = frozenset()
        port_words = {}  # the port kinds' bitmap words, ORed: two kinds may set bits of one word
        for kind in FILTERS:
            for name, key, value in kind.entries(self.include.get(kind.name, empty), self.exclude.get(kind.name, empty)):
                if name == abi.MAP_FILTER_PORTS:
                    port_words[key] = port_words.get(key, 0) | abi.U64_KEY.unpack(value)[0]
                else:
                    yield name, key, value
        for key, bits in sorted(port_words.items()):
            yield abi.MAP_FILTER_PORTS, key, abi.U64_KEY.pack(bits)
        for cid, (_level, bits) in self.cgroup_ids.items():
            yield abi.MAP_FILTER_CGROUPS, abi.U64_KEY.pack(cid), bytes((bits,))

    def resolve_cgroups(self, tree, warn=None):
        """--cgroup, --unit, --container and their exclusions as cgroup ids, from the cgroup v2 hierarchy
        (pipeline/identity.CgroupTree). A name not there yet is waited for (filter_cgroups.CgroupWatch), with
        a warning; no cgroup v2, or a container prefix that names two, is a one-line error (exit 2)."""
        if not self.wants_cgroups():
            return self
        self.cgroup_ids, missing = resolve(self, tree, CGROUP_KINDS)
        self.cgroups_missing = missing
        for option, value in missing:
            if warn:
                warn(f"socket-snoop: warning: {option} {value}: no such cgroup (under {tree.mount}) yet: "
                     "filtered in the kernel as soon as it appears")
        return self

    # -- the user space's side ----------------------------------------------------
    def match(self, kind, family, src, sport, dst, dport, pid, comm: bytes, newstate, uid=None, user=None,
              cgroup=None, unit=None, container=None, result=None):
        """The kernel's verdict (bpf: passes_filters()) in Python, for a logged event or record: `kind` an
        events type number (EV_CONNECTION for a record, with its result's word), src/dst ipaddress objects
        (IPv4-mapped IPv6 counts as IPv4), comm the raw name; the identity fields as far as the log has them."""
        if not self._tests:
            return True
        ev = Event(kind, family, src, sport, dst, dport, pid, comm.split(b"\0", 1)[0], newstate, uid, user,
                   cgroup, unit, container, result)
        return all(test(ev) for test in self._tests)

    def match_owner(self, pid, comm: bytes, uid=None, user=None):
        """The owner filters (pid, comm, uid, and their exclusions), for an owner that only user space could
        resolve, or a logged event (which may carry a uid, or only a user name, or neither)."""
        if not self._owner_tests:
            return True
        ev = Event(0, 0, None, 0, None, 0, pid, comm.split(b"\0", 1)[0], 0, uid, user)
        return all(test(ev) for test in self._owner_tests)
