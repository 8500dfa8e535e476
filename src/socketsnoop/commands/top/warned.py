"""top's health warnings: the kinds made from connection records (connect-failures, retransmits,
port-exhaustion: top's kernel program sends no other events), at the monitor's default thresholds. A row whose
group a warning in force is about is marked (JSON "warnings": its kinds; text and screen: "!" before its
label), and a short line under the header names the warnings."""

import ipaddress

from ...kernel.abi import DIR_OUT
from ...logformat.escape import comm_text, escape_comm, format_endpoint
from .columns import GROUPINGS

MAX_SHOWN = 3  # warnings named in the header's line; the rest counted
_OWNER_ONLY = ("user", "unit", "container", "pod")  # known of a warning's owner, not of each process it names
MARK = "!"


def _flows(owner, fields, by):
    """The flows (columns.flow_fields' order) a warning is about, as far as grouping `by` can tell: the
    processes it names (their uid and cgroup known for its owner only), towards its destination. A comm as
    the kernel's identity has it (16 bytes, NUL-padded), as flow_fields gives it."""
    f = dict(fields)
    if "dst" not in f or by == "listener" or (by == "service" and "dport" not in f):
        return []
    dst = ipaddress.ip_address(f["dst"])
    family, raddr = dst.version, dst.packed.ljust(16, b"\0")
    procs = [(pid, comm) for pid, comm, _n in f.get("processes", ())]
    if owner is not None and (owner.pid, owner.comm) not in procs:
        procs.insert(0, (owner.pid, owner.comm))
    out = []
    for pid, comm in procs:
        mine = owner is not None and (pid, comm) == (owner.pid, owner.comm)
        if by in _OWNER_ONLY and not mine:
            continue
        uid, cgroup = (owner.uid, owner.cgroup) if mine else (0, 0)
        out.append((pid, comm.ljust(16, b"\0"), uid, cgroup, DIR_OUT, family, b"", 0, raddr, f.get("dport", 0)))
    return out


def marks(active, by, names):
    """{a grouping's key: the kinds of the warnings in force about it} (active: Health.active())."""
    of = GROUPINGS[by].of
    out = {}
    for kind, owner, fields in active:
        for flow in _flows(owner, fields, by):
            out.setdefault(of(flow, names)[0], set()).add(kind)
    return out


def described(active):
    """The warnings in force as JSON objects: kind, the owner, the numbers (processes as objects)."""
    docs = []
    for kind, owner, fields in active:
        doc = {"kind": kind}
        if owner is not None:
            doc.update(pid=owner.pid, comm=comm_text(owner.comm))
        for name, value in fields:
            if name == "processes":
                value = [{"pid": pid, "comm": comm_text(comm), "count": n} for pid, comm, n in value]
            doc[name] = value
        docs.append(doc)
    return docs


def warnings_line(active):
    """The header's short line: 'warnings: KIND where (PID COMM), ...', at most MAX_SHOWN, or None."""
    if not active:
        return None
    words = []
    for kind, owner, fields in active[:MAX_SHOWN]:
        f = dict(fields)
        where = f.get("dst", "")
        if "dport" in f:
            where = format_endpoint(6 if ":" in where else 4, where, f["dport"])
        who = f" ({owner.pid} {escape_comm(owner.comm, owner.pid)})" if owner is not None else ""
        words.append(f"{kind} {where}{who}")
    more = f", and {len(active) - MAX_SHOWN} more" if len(active) > MAX_SHOWN else ""
    return "warnings: " + ", ".join(words) + more
