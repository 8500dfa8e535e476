"""The tables of the connections' summary lines ('Connection Summary:', JSON "event": "connection"): failed
connections by cause and by destination, the top connections and processes by bytes, the slowest handshakes,
resets by who sent them, and the distributions of duration, handshake time and RTT.

Bounded as the report's other tables: table_limit keys each and the tables' shared byte budget (what is left
out is counted in the report's left_out); a top-N heap keeps at most table_limit rows, which is exact for any
--top up to as many rows as it holds.
"""

import heapq
from collections import Counter
from typing import NamedTuple

from .bounds import ENTRY_BYTES, TOP_BYTES
from .histograms import Log2


class Process(NamedTuple):
    """A key of the tables by process."""
    pid: int
    comm: str  # escaped


class Conn(NamedTuple):
    """A connection of a summary line, as the tables of connections show it."""
    local: str  # endpoint
    remote: str
    pid: int
    comm: str  # escaped
    direction: str | None
    result: str
    sent: int
    received: int
    handshake_us: int | None
    duration_us: int | None
    ts_ns: int


class Records:
    """The tables of the kernel's connection records, as the logs' summary lines give them."""

    def __init__(self, report):
        self.report = report
        self.count = 0  # summary lines counted (passed the filters)
        self.seq = 0
        self.sent = self.received = 0
        self.causes = Counter()  # result -> failed connections (result is not "closed")
        self.failed_dst = {}  # remote endpoint -> Counter(result)
        self.by_bytes = []  # min-heap of (bytes, -seq, Conn)
        self.handshakes = []  # min-heap of (handshake_us, -seq, Conn)
        self.proc_bytes = {}  # Process -> [sent, received, connections]
        self.resets_sent = Counter()  # Process -> connections ended by a reset we sent
        self.resets_received = Counter()  # remote endpoint -> connections ended by a reset the peer sent
        self.durations, self.handshake_times, self.rtts = Log2(), Log2(), Log2()  # microseconds

    def add(self, r, local, remote, comm):
        """One Summary; local, remote: its endpoints; comm: its escaped name."""
        rep = self.report
        self.count += 1
        self.seq += 1
        self.sent += r.sent
        self.received += r.received
        for hist, us in ((self.durations, r.duration_us), (self.handshake_times, r.handshake_us),
                         (self.rtts, r.rtt_us)):
            if us is not None:
                hist.add(us)
        conn = Conn(local, remote, r.pid, comm, r.direction, r.result, r.sent, r.received, r.handshake_us,
                    r.duration_us, r.ts_ns)
        cost = TOP_BYTES + len(comm)
        self._top(self.by_bytes, (r.sent + r.received, -self.seq, conn), cost)
        if r.handshake_us is not None:
            self._top(self.handshakes, (r.handshake_us, -self.seq, conn), cost)
        proc = self.proc_bytes.get((r.pid, comm))
        if proc is None and rep._room(self.proc_bytes, "process_bytes", ENTRY_BYTES + len(comm)):
            proc = self.proc_bytes[Process(r.pid, comm)] = [0, 0, 0]
        if proc is not None:
            proc[0] += r.sent
            proc[1] += r.received
            proc[2] += 1
        if r.result == "closed":
            return
        self.causes[r.result] += 1
        causes = self.failed_dst.get(remote)
        if causes is None and rep._room(self.failed_dst, "failed_destinations", ENTRY_BYTES + len(remote)):
            causes = self.failed_dst[remote] = Counter()
        if causes is not None:
            causes[r.result] += 1
        if r.result == "reset-sent":
            key = (r.pid, comm)
            if key in self.resets_sent:
                self.resets_sent[key] += 1  # the key stays the Process it was added as
            elif rep._room(self.resets_sent, "resets_sent", ENTRY_BYTES + len(comm)):
                self.resets_sent[Process(*key)] = 1
        elif r.result == "reset-received":
            if remote in self.resets_received or rep._room(self.resets_received, "resets_received",
                                                           ENTRY_BYTES + len(remote)):
                self.resets_received[remote] += 1

    def _top(self, heap, entry, cost):
        if len(heap) < self.report.table_limit and self.report.budget.take(cost):
            heapq.heappush(heap, entry)
        elif heap and entry > heap[0]:
            heapq.heapreplace(heap, entry)

    def summary(self, top):
        """The counts and the first top rows of each table, as the JSON output has them."""
        failed = sorted(self.failed_dst.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))
        procs = sorted(self.proc_bytes.items(), key=lambda kv: (-(kv[1][0] + kv[1][1]), -kv[1][2], kv[0]))
        return {
            "connections": self.count,
            "failed": sum(self.causes.values()),
            "bytes_sent": self.sent,
            "bytes_received": self.received,
            "failed_by_cause": dict(sorted(self.causes.items(), key=lambda kv: (-kv[1], kv[0]))),
            "failed_by_destination": [{"remote": ep, "failed": sum(c.values()),
                                       "causes": dict(sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))}
                                      for ep, c in failed[:top]],
            "top_connections_by_bytes": [_conn(c) for _, _, c in heapq.nlargest(top, self.by_bytes)],
            "top_processes_by_bytes": [{"pid": p.pid, "comm": p.comm, "bytes_sent": v[0], "bytes_received": v[1],
                                        "connections": v[2]} for p, v in procs[:top]],
            "slowest_handshakes": [_conn(c) for _, _, c in heapq.nlargest(top, self.handshakes)],
            "resets_sent_by_process": [{"pid": p.pid, "comm": p.comm, "connections": n}
                                       for p, n in sorted(self.resets_sent.items(), key=_by_count)[:top]],
            "resets_received_by_remote": [{"remote": ep, "connections": n}
                                          for ep, n in sorted(self.resets_received.items(), key=_by_count)[:top]],
        }


def _by_count(kv):
    return -kv[1], kv[0]


def _ms(us):
    return None if us is None else round(us / 1000, 3)


def _conn(c):
    return {"src": c.local, "dst": c.remote, "pid": c.pid, "comm": c.comm, "direction": c.direction,
            "result": c.result, "bytes_sent": c.sent, "bytes_received": c.received,
            "handshake_ms": _ms(c.handshake_us), "duration_ms": _ms(c.duration_us), "end_ns": c.ts_ns}
