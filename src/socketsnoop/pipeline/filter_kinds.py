"""The kinds of filter (pipeline/filters.py declares each one): how a kind's values become entries of the
kernel's filter maps, and how user space tells whether a logged or enriched event matches them (Event)."""

from typing import NamedTuple

from ..kernel import abi
from ..kernel.abi import (
    ADDR_EXCLUDE,
    EV_CONNECTION,
    FILT_CGROUP,
    FILT_X_CGROUP,
    FILTER_KEY,
    FILTER_KEY_PREFIX_BITS,
    FV_EXCLUDE,
    FV_INCLUDE,
)

RUN_AND_REPORT = ("run", "report")
RUN = ("run",)
_ONE = b"\x01"


class Event(NamedTuple):
    """What a filter looks at: an event or a connection record (kind EV_CONNECTION, its result's word),
    src/dst ipaddress objects, comm the raw name, the identity fields as far as they are known."""
    kind: int
    family: int
    src: object
    sport: int
    dst: object
    dport: int
    pid: int
    comm: bytes
    newstate: int
    uid: int | None = None
    user: str | None = None
    cgroup: str | None = None
    unit: str | None = None
    container: str | None = None
    result: str | None = None


class Kind:
    """A filter on values: NAME's flags take a value (repeatable); `--exclude-NAME` too where `exclude` (its
    help) is given. bit, exclude_bit: the kernel's filter_flags bits."""
    group = None  # kinds of one group are OR-ed as one kind (the cgroup's names); None: its own

    def __init__(self, name, flags, parse, help, bit, exclude=None, exclude_bit=0, metavar=None,
                 exclude_metavar=None, example=None, show=None):
        self.name, self.flags, self.parse, self.help, self.metavar = name, flags, parse, help, metavar
        self.example, self.show = example, show  # a value for the example config; value -> its text (None: as is)
        self.bit, self.exclude, self.exclude_bit = bit, exclude, exclude_bit
        self.exclude_metavar = exclude_metavar
        self.exclude_name = "exclude_" + name if exclude else None
        self.exclude_flag = "--exclude-" + name.replace("_", "-") if exclude else None

    def entries(self, include, exclude):
        """(map name, key bytes, value bytes) for the kernel."""
        return ()

    def hits(self, ev, values):
        """The user-space match: does the event have one of `values`?"""
        raise NotImplementedError


class OwnerKind(Kind):
    """The owner's pid, comm or uid: a hash set whose values say include (FV_INCLUDE), exclude, or both."""

    def __init__(self, *args, map_name, pack, value_of, **kw):
        super().__init__(*args, **kw)
        self.map_name, self.pack, self.value_of = map_name, pack, value_of

    def entries(self, include, exclude):
        for value in include | exclude:
            bits = (FV_INCLUDE if value in include else 0) | (FV_EXCLUDE if value in exclude else 0)
            yield self.map_name, self.pack(value), bytes((bits,))

    def hits(self, ev, values):
        value = self.value_of(ev)
        return value is not None and value in values


def _plain(ip):
    return ip.ipv4_mapped or ip if ip.version == 6 else ip


class EndsKind(Kind):
    """Ports or addresses at an end of the connection: `ends` picks them from an event (either end, local
    only, remote only); `code` is the kind in the map's key (ADDR_EITHER, ...; exclusions: ADDR_EXCLUDE)."""

    def __init__(self, *args, ends, code, **kw):
        super().__init__(*args, **kw)
        self.ends, self.code = ends, code


class PortKind(EndsKind):
    def entries(self, include, exclude):
        """filter_ports is a bitmap (an array the verifier inlines): each kind's ports as bits of 64-bit words,
        the words that have a bit set. Several kinds share words: Filters.map_entries ORs them together."""
        words = {}
        for code, ports in ((self.code, include), (ADDR_EXCLUDE, exclude)):
            for port in ports:
                bit = code << abi.PORT_KEY_KIND_SHIFT | port
                words[bit >> 6] = words.get(bit >> 6, 0) | 1 << (bit & 63)
        for word, bits in sorted(words.items()):
            yield abi.MAP_FILTER_PORTS, abi.U32_KEY.pack(word), abi.U64_KEY.pack(bits)

    def hits(self, ev, values):
        return any(port in values for port in self.ends(ev, "port"))


class AddrKind(EndsKind):
    def entries(self, include, exclude):
        for code, nets in ((self.code, include), (ADDR_EXCLUDE, exclude)):
            for net in nets:
                yield abi.MAP_FILTER_ADDRS, FILTER_KEY.pack(FILTER_KEY_PREFIX_BITS + net.prefixlen, code, net.version,
                                                            net.network_address.packed.ljust(16, b"\0")), _ONE

    def hits(self, ev, values):
        return any(ip.version == net.version and ip in net for ip in map(_plain, self.ends(ev, "addr"))
                   for net in values)


class StateKind(Kind):
    """The new state: a bit mask in read-only data (Filters.state_mask). A connection record has no new
    state of its own: the kernel lets it pass (the state filter is for events)."""

    def hits(self, ev, values):
        return ev.kind == EV_CONNECTION or ev.newstate in values


class CgroupKind(Kind):
    """A cgroup named by its path, a unit or a container: resolved to cgroup ids (Filters.resolve_cgroups),
    a socket passes when a filter cgroup is it or one of its ancestors."""
    group = "cgroup"

    def __init__(self, *args, test, **kw):
        super().__init__(*args, bit=FILT_CGROUP, exclude_bit=FILT_X_CGROUP, **kw)
        self.test = test

    def hits(self, ev, values):
        return any(self.test(ev, value) for value in values)
