"""Listeners' accept-queue overflows from the kernel's own counters, read about once a second, on every kernel
(no drop reason needed, nothing per packet): the accept-queue-overflow warning's second source.

Per network namespace the monitor knows a listener in (the kernel program's `listeners` table), its TcpExt
ListenOverflows (/proc/PID/net/netstat of a process in it: the listener's owner). That counter grows for every
packet refused because a listener's accept queue was full: the SYN (tcp_conn_request) and a handshake's last
packet (tcp_v4/v6_syn_recv_sock). When it grew, the namespace's listening sockets are asked, as `ss -ltm` asks
them (kernel/sockdiag.py): each one's accept queue, its size (backlog) and its own drop count (sk_drops, which
the same refusals raise through tcp_listendrop). The drops of the interval go to the listeners whose sk_drops grew,
each capped by the namespace's ListenOverflows growth (sk_drops also counts a listener's rarer other drops);
if they add up to more than that growth, to those of them full now if any, marked shared if still more;
when sk_drops is not there, to the listeners full now (queue > backlog: sk_acceptq_is_full, 5.10 as 6.x), each
given them all and marked shared if there are several. (/proc/net/tcp shows a listener's queue but not its
backlog: its tx_queue is 0 for a listener.)

Bounded: MAX_NETNS namespaces (in turns past that) and MAX_LISTENERS listeners per namespace per tick; the rest
counted (skipped, the kind's overflow), as are the namespaces no process of the table is in any more.

A namespace whose listeners cannot be asked is counted too (skipped, and `unread` with the drops left
unattributed), and the reason said once: another namespace is entered by setns(), which needs CAP_SYS_ADMIN
(the service unit and the container image do not grant it), and a sandbox may refuse AF_NETLINK sockets.
"""

import errno

from ..kernel.sockdiag import diag_socket, diag_socket_in, listening
from .owners import netns_inode

MAX_NETNS = 64  # namespaces whose counter is read per tick
MAX_LISTENERS = 1024  # listening sockets of one namespace looked at when its overflows grew
MAX_SAID = 8  # distinct reasons a namespace could not be read, each said once


def listen_overflows(pid, proc="/proc"):
    """TcpExt ListenOverflows of the network namespace of process pid ('self': ours), None if unreadable."""
    try:
        with open(f"{proc}/{pid}/net/netstat", "rb") as f:
            lines = [line.split() for line in f if line.startswith(b"TcpExt:")]
    except OSError:
        return None
    if len(lines) != 2:
        return None
    try:
        return int(lines[1][lines[0].index(b"ListenOverflows")])
    except (ValueError, IndexError):
        return None


class ListenQueues:
    """read(listeners) once a tick -> {(netns, family, addr, port): (new drops, backlog, queue, pid, uid, comm,
    shared)}: the listeners given drops of their namespace's ListenOverflows growth since the last tick."""

    def __init__(self, proc="/proc", warn=None):
        self.proc, self.warn = proc, warn  # warn: says a reason the queues cannot be read (once per reason)
        self.own = netns_inode("self", proc)
        self.overflows = {}  # netns -> ListenOverflows last read
        self.drops = {}  # (netns, family, addr, port) -> the listener's sk_drops last read
        self.skipped = 0  # namespaces and listeners the last read left out for the bounds
        self.turn = 0  # past MAX_NETNS namespaces: where the next read starts
        self.unread = self.unread_drops = 0  # namespace reads that failed since the start; their drops
        self.reasons = set()  # the reasons said

    def read(self, listeners):
        """listeners: {(netns, family, addr, port): (pid, uid, comm)}, the kernel program's table."""
        self.skipped, by_ns = 0, {}
        for key, owner in listeners.items():
            by_ns.setdefault(key[0], {})[key[1:]] = owner
        if len(by_ns) > MAX_NETNS:
            self.skipped = len(by_ns) - MAX_NETNS
        out, order = {}, sorted(by_ns)
        if len(order) > MAX_NETNS:  # in turns: each namespace is read every few ticks (its counter keeps its count)
            start = self.turn % len(order)
            order = (order[start:] + order[:start])[:MAX_NETNS]
            self.turn += MAX_NETNS
        for ns in order:
            pid = self._pid_in(ns, by_ns[ns])
            now = None if pid is None else listen_overflows(pid, self.proc)
            if now is None:  # no owner of its listeners left in it (they forked and exited): not read
                self.skipped += 1
                continue
            before = self.overflows.get(ns)
            self.overflows[ns] = now
            if before is None and not now or before is not None and now <= before:
                continue  # nothing refused (or a namespace made again under the same inode: start over)
            grown = now - before if before is not None else 0  # first sight: sk_drops' baselines only
            out.update(self._attribute(ns, pid, by_ns[ns], grown))
        gone = [ns for ns in self.overflows if ns not in by_ns]
        for ns in gone:
            del self.overflows[ns]
        if gone:
            self.drops = {k: v for k, v in self.drops.items() if k[0] in by_ns}
        return out

    def _pid_in(self, ns, owners):
        """'self' for our namespace, else an owner's pid still in it."""
        if ns == self.own:
            return "self"
        return next((pid for pid, _uid, _comm in owners.values() if pid and netns_inode(pid, self.proc) == ns),
                    None)

    def _attribute(self, ns, pid, owners, grown):
        try:
            sock = diag_socket() if pid == "self" else diag_socket_in(pid, self.proc)
            if sock is None:  # its owner exited meanwhile
                self.skipped += 1
                return {}
            with sock:
                found, skipped = listening(sock, MAX_LISTENERS)
        except OSError as e:
            self._cannot_read(ns, pid == "self", e, grown)
            return {}
        self.skipped += skipped
        read = {}  # key -> [queue, backlog, drops]: SO_REUSEPORT listeners of one address and port summed
        for fam, addr, port, queue, backlog, drops in found:
            row = read.setdefault((ns, fam, addr, port), [0, 0, 0])
            row[0], row[1] = row[0] + queue, row[1] + backlog
            row[2] = None if drops is None or row[2] is None else row[2] + drops
        given = {}
        for key, (queue, backlog, drops) in read.items():
            before = self.drops.get(key)
            if drops is not None:
                new = min(drops - before if before is not None and drops >= before else drops, grown)
            else:
                new = grown if queue > backlog else 0
            if new:
                _ns, fam, addr, port = key
                owner = owners.get((fam, addr, port)) or owners.get((fam, bytes(16), port)) or (0, 0, b"")
                given[key] = (new, backlog, queue, *owner)
        if not skipped:  # all of the namespace's listeners were read: those closed are forgotten
            self.drops = {k: v for k, v in self.drops.items() if k[0] != ns}
        self.drops.update((k, row[2]) for k, row in read.items() if row[2] is not None)
        if sum(v[0] for v in given.values()) > grown:  # sk_drops counted other drops too: those full now keep theirs
            full = {k: v for k, v in given.items() if v[2] > v[1]}
            given = full or given
        shared = sum(v[0] for v in given.values()) > grown
        return {k: (*v, shared) for k, v in given.items()}

    def _cannot_read(self, ns, own, error, grown):
        """A namespace whose listeners could not be asked: counted (skipped, unread) and its reason said once."""
        self.skipped += 1
        self.unread += 1
        self.unread_drops += grown
        text = error.strerror or str(error)
        reason = (own, error.errno)
        if self.warn is None or reason in self.reasons or len(self.reasons) >= MAX_SAID:
            return
        self.reasons.add(reason)
        self.warn(f"socket-snoop: warning: accept-queue-overflow: cannot read the accept queues of "
                  f"{'our' if own else 'another'} network namespace (netns {ns}): {text}{_why(error.errno, text)}; "
                  "packets refused there for a full queue are counted (at exit), not warned of; said once")

    def unread_line(self):
        """The exit's warning line for the namespaces whose queues could not be read, or None."""
        if not self.unread:
            return None
        return (f"socket-snoop: warning: accept-queue-overflow: {self.unread} reads of a network namespace's accept "
                f"queues failed (said at the first): {self.unread_drops} packets refused for a full queue were not "
                "given to a listener, nor warned of")


def _why(err, text):
    """What the reason usually means, for the administrator."""
    if text.startswith("setns") and err == errno.EPERM:
        return (" (entering another network namespace needs CAP_SYS_ADMIN, which the monitor lacks: the service "
                "unit and the container do not grant it)")
    if err in (errno.EAFNOSUPPORT, errno.EPERM, errno.EACCES) and "NETLINK" in text:
        return " (a sandbox refuses AF_NETLINK sockets: a systemd unit's RestrictAddressFamilies= must list AF_NETLINK)"
    return ""
