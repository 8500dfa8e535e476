"""The names of the kernel's drop reasons (enum skb_drop_reason), read from the running kernel's BTF: their
values differ between kernel versions and distributions, so no table is copied from one kernel. And what
this kernel lets the drops' program see (the reason since Linux 5.17, the receiving socket since 6.11)."""

import functools

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


@functools.cache
def reason_names():
    """{value: name} of this kernel's drop reasons ('TCP_LISTEN_OVERFLOW'), {} where its BTF has none."""
    with Btf() as btf:
        values = btf.enum_values(ENUM) or {}
    return {value: _short(name) for value, name in values.items() if not name.endswith("_MAX")}


def reason_name(value):
    """A drop reason's name on this kernel, else its number as text (a value this kernel does not name)."""
    return reason_names().get(value) or str(value)


def drop_support():
    """(has the reason, has rx_sk) for this kernel's kfree_skb tracepoint, from its arguments in the BTF."""
    with Btf() as btf:
        args = btf.tracepoint_args("kfree_skb")
    args = args or 0
    return args >= DROP_TP_REASON_ARGS, args >= DROP_TP_RX_SK_ARGS
