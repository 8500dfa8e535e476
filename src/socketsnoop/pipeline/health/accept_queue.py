"""accept-queue-overflow: a listener dropping connections because its accept queue is full (the application
does not accept() fast enough, or its backlog is too small). From the kernel program's count of each
listener's TCP_LISTEN_OVERFLOW drops (kernel/bpf/drops.h: listen_drops), read about once a second: no
event crosses to user space for it. The kernel gives that reason where a handshake's last packet finds the
queue full (Linux 6.15+); a SYN refused for a full queue is freed without one, so it is not seen here."""

from ...pipeline.decode import make_ident
from .alerts import Alerts, Owner, Window, addr_text

WINDOW_S = 10  # drops counted over this many seconds


class AcceptQueueOverflow:
    """A listener (netns, address, port) with threshold or more packets dropped for a full accept queue within
    WINDOW_S, with its backlog (the queue's size) and its owner."""

    kind = "accept-queue-overflow"
    setting = "accept_queue_overflow"  # its Thresholds field

    def __init__(self, t):
        self.threshold = t.accept_queue_overflow
        self.alerts = Alerts(self.kind, t.interval)
        self.listeners = {}  # key -> [drops the kernel counted, Window of new drops, backlog, Owner]
        self.overflow = 0  # (the kernel's map is bounded: SS_MAX_LISTENERS listeners; none left out here)

    def listen_drops(self, table, now):
        """table: {(netns, family, addr, port): (drops, backlog, pid, uid, comm)}, the kernel's counts so far."""
        for key in [k for k in self.listeners if k not in table]:  # the listener closed
            del self.listeners[key]
        for key, (drops, backlog, pid, uid, comm) in table.items():
            lst = self.listeners.get(key)
            if lst is None:
                lst = self.listeners[key] = [0, Window(WINDOW_S), 0, None]
            new = drops - lst[0] if drops >= lst[0] else drops  # less: another listener on the same key
            if new:
                lst[1].add(now, new)
            netns, family, addr, port = key
            ident = make_ident(pid, port, 0, addr, bytes(16), comm, family)
            lst[0], lst[2], lst[3] = drops, backlog, Owner(pid, comm, uid, 0, ident)

    def tick(self, now):
        for key, (total, window, backlog, owner) in self.listeners.items():
            sums = window.sums(now)
            dropped = sums[0] if sums else 0
            if dropped < self.threshold:
                continue
            netns, family, addr, port = key
            self.alerts.update(now, key, owner, (
                ("listener", addr_text(family, addr)), ("port", port), ("netns", netns), ("backlog", backlog),
                ("drops", dropped), ("window_s", WINDOW_S), ("drops_total", total)),
                f"{dropped} connection packets dropped because the accept queue (backlog {backlog}) was full: the "
                "process does not accept() connections as fast as they come (busy, blocked or stuck), or its "
                "listen() backlog is too small for the bursts it gets")
        return self.alerts.settle(now, "no more connections dropped for a full accept queue on this listener")
