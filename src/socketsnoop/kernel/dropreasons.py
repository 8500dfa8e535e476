"""The names of the kernel's drop reasons (enum skb_drop_reason), read from the running kernel's BTF: their
values differ between kernel versions and distributions, so no table is copied from one kernel. And what
this kernel lets the drops' program see (the reason since Linux 5.17, the receiving socket since 6.11)."""

from . import abi
from .libbpf import Btf

ENUM = "skb_drop_reason"
PREFIXES = ("SKB_DROP_REASON_", "SKB_")  # SKB_DROP_REASON_NO_SOCKET -> NO_SOCKET; SKB_CONSUMED -> CONSUMED
REASON_KERNEL = (5, 17)  # kfree_skb's reason argument
RX_SK_KERNEL = (6, 11)  # its rx_sk argument
DROP_TP_REASON_ARGS, DROP_TP_RX_SK_ARGS = 3, 4  # kfree_skb's arguments with the reason, and with rx_sk


def _short(name):
    for prefix in PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


_NAMES = []  # this kernel's {value: name}, once: parsing its BTF takes about 10 MB for a moment


def reason_names(btf=None):
    """{value: name} of this kernel's drop reasons ('TCP_LISTEN_OVERFLOW'), {} where its BTF has none; from
    btf (the kernel's, open) if given, else parsed here on first use."""
    if not _NAMES:
        if btf is None:
            with Btf() as own:
                return reason_names(own)
        values = btf.enum_values(ENUM) or {}
        _NAMES.append({value: _short(name) for value, name in values.items() if not name.endswith("_MAX")})
    return _NAMES[0]


def reason_name(value):
    """A drop reason's name on this kernel, else its number as text (a value this kernel does not name)."""
    return reason_names().get(value) or str(value)


def drop_support():
    """(has the reason, has rx_sk) for this kernel's kfree_skb tracepoint, from its arguments in the BTF. Where
    it has the reason, the reasons' names are read from the same BTF now, at start, rather than at the exit's
    Drops line, when the monitor holds its rings' memory too (its peak would grow by the parse)."""
    with Btf() as btf:
        args = btf.tracepoint_args("kfree_skb") or 0
        if args >= DROP_TP_REASON_ARGS:
            reason_names(btf)
    return args >= DROP_TP_REASON_ARGS, args >= DROP_TP_RX_SK_ARGS


def drop_reasons_text(supported, rx_sk=False):
    """One line for `socket-snoop check` and the monitor's warning: what this kernel tells of TCP drops."""
    if not supported:
        return (f"this kernel's kfree_skb tracepoint has no drop reason (Linux {REASON_KERNEL[0]}.{REASON_KERNEL[1]}+):"
                " no drops are counted (no DROPS= on records, no socketsnoop_drops_total, no --drops lines; "
                "accept-queue-overflow comes from the kernel's ListenOverflows and listener counts alone)")
    if rx_sk:
        return "counted by reason, on their connection and listener (kfree_skb with its reason and rx_sk)"
    return ("counted by reason, on their connection where the packet carries its socket (kfree_skb's rx_sk, "
            "Linux 6.11+, is missing: a listener's drops by reason are not attributed; accept-queue-overflow comes "
            "from the kernel's ListenOverflows and listener counts)")


def read_drop_reasons(obj, ncpus):
    """{reason value: packets} of an open object's per-CPU counts (drop_reasons): the values this kernel names,
    and the last slot (every larger value)."""
    named = max(reason_names(), default=abi.DROP_REASONS) + 1
    out = {}
    for idx in sorted({*range(min(named, abi.DROP_REASONS)), abi.DROP_REASONS - 1}):
        raw = obj.lookup(abi.MAP_DROP_REASONS, abi.U32_KEY.pack(idx), 8 * ncpus)
        n = sum(v for (v,) in abi.U64_VALUE.iter_unpack(raw)) if raw else 0
        if n:
            out[idx] = n
    return out


def read_listen_drops(obj):
    """{(netns, family, addr bytes, port): (drops, backlog, pid, uid, comm bytes)} of an open object's
    listen_drops: the listeners whose accept queue overflowed (TCP_LISTEN_OVERFLOW), still open, their drops
    counted since they listened."""
    out = {}
    for key, value in obj.items(abi.MAP_LISTEN_DROPS):
        netns, port, family, addr = abi.LISTEN_KEY.unpack(key)
        drops, backlog, owner = abi.LISTEN_DROPS.unpack(value)
        pid, uid, comm = abi.OWNER_STRUCT.unpack(owner)
        out[(netns, family, addr, port)] = (drops, backlog, pid, uid, comm.split(b"\0", 1)[0])
    return out
