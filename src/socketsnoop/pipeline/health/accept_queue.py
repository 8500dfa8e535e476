"""accept-queue-overflow: a listener dropping connections because its accept queue is full (the application
does not accept() fast enough, or its backlog is too small). Two sources, both read about once a second, with no
event crossing to user space for them:
- drop-reason: the kernel program's count of each listener's TCP_LISTEN_OVERFLOW drops (kernel/bpf/drops.h:
  listen_drops). The kernel gives that reason where a handshake's last packet finds the queue full (Linux
  6.15+); a SYN refused for a full queue is freed without one.
- overflow-counter: the namespace's ListenOverflows and each listener's own drop count, queue and backlog
  (pipeline/listen_queues.py): every kernel, the SYN refused too.
One refused packet can be counted by both: per listener and tick the larger of the two counts is taken, not
their sum (source: the one that gave it)."""

from ...pipeline.decode import make_ident
from .alerts import MAX_KEYS, Alerts, Owner, Window, addr_text

WINDOW_S = 10  # drops counted over this many seconds
REASON, COUNTER = "drop-reason", "overflow-counter"


class _Listener:
    __slots__ = ("reason_seen", "reason_new", "counter_new", "window", "total", "backlog", "owner", "source",
                 "shared")

    def __init__(self):
        self.reason_seen = self.reason_new = self.counter_new = self.total = self.backlog = 0
        self.window, self.owner, self.source, self.shared = Window(WINDOW_S), None, REASON, False


class AcceptQueueOverflow:
    """A listener (netns, address, port) with threshold or more packets dropped for a full accept queue within
    WINDOW_S, with its backlog (the queue's size) and its owner."""

    kind = "accept-queue-overflow"
    setting = "accept_queue_overflow"  # its Thresholds field

    def __init__(self, t):
        self.threshold = t.accept_queue_overflow
        self.alerts = Alerts(self.kind, t.interval)
        self.listeners = {}  # key -> _Listener
        self.overflow = 0  # listeners with drops not followed: MAX_KEYS were

    def _get(self, key):
        lst = self.listeners.get(key)
        if lst is None:
            if len(self.listeners) >= MAX_KEYS:
                self.overflow += 1
                return None
            lst = self.listeners[key] = _Listener()
        return lst

    @staticmethod
    def _own(lst, key, pid, uid, comm):
        netns, family, addr, port = key
        lst.owner = Owner(pid, comm, uid, 0, make_ident(pid, port, 0, addr, bytes(16), comm, family))

    def listen_drops(self, table, now):
        """table: {(netns, family, addr, port): (drops, backlog, pid, uid, comm)}, the kernel's counts so far."""
        for key in [k for k, lst in self.listeners.items() if lst.reason_seen and k not in table]:
            del self.listeners[key]  # the listener closed: its warning clears
        for key, (drops, backlog, pid, uid, comm) in table.items():
            lst = self._get(key)
            if lst is None:
                continue
            lst.reason_new += drops - lst.reason_seen if drops >= lst.reason_seen else drops  # less: a new listener
            lst.reason_seen, lst.backlog = drops, backlog
            self._own(lst, key, pid, uid, comm)

    def queue_drops(self, table, skipped, now):
        """table: {(netns, family, addr, port): (new drops, backlog, queue, pid, uid, comm, shared)}, this tick's
        drops of the namespaces' ListenOverflows given to listeners (pipeline/listen_queues.py); skipped: the
        namespaces and listeners it left out for its bounds (counted as this kind's overflow)."""
        self.overflow += skipped
        for key, (new, backlog, _queue, pid, uid, comm, shared) in table.items():
            lst = self._get(key)
            if lst is None:
                continue
            lst.counter_new += new
            lst.backlog, lst.shared = backlog, shared
            if pid or lst.owner is None:
                self._own(lst, key, pid, uid, comm)

    def tick(self, now):
        for key, lst in list(self.listeners.items()):
            new = max(lst.reason_new, lst.counter_new)
            if new:
                lst.window.add(now, new)
                lst.total += new
                lst.source = REASON if lst.reason_new >= lst.counter_new else COUNTER
            lst.reason_new = lst.counter_new = 0
            sums = lst.window.sums(now)
            dropped = sums[0] if sums else 0
            if not dropped and not lst.reason_seen:
                del self.listeners[key]  # nothing left to say about it
            if dropped < self.threshold:
                continue
            self._say(now, key, lst, dropped)
        return self.alerts.settle(now, "no more connections dropped for a full accept queue on this listener")

    def _say(self, now, key, lst, dropped):
        netns, family, addr, port = key
        shared = ("; several listeners of this network namespace had drops at once and the kernel's counters "
                  "cannot tell them apart exactly: each is given them all") if lst.shared else ""
        self.alerts.update(now, key, lst.owner, (
            ("listener", addr_text(family, addr)), ("port", port), ("netns", netns), ("backlog", lst.backlog),
            ("drops", dropped), ("window_s", WINDOW_S), ("drops_total", lst.total), ("source", lst.source)),
            f"{dropped} connection packets dropped because the accept queue (backlog {lst.backlog}) was full: the "
            "process does not accept() connections as fast as they come (busy, blocked or stuck), or its "
            "listen() backlog is too small for the bursts it gets" + shared)
