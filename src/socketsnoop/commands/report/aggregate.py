"""The analysis: Records -> counts, the summary tables, and the lifecycles (through output/tracker.py's Tracker).

Bounded whatever the input: each table keeps at most TABLE_LIMIT keys (what it leaves out is counted and
reported), the maps that join a text log's lines into connections at most max(TABLE_LIMIT, max_conns).
"""

import heapq
from collections import Counter, OrderedDict
from typing import NamedTuple

from ...kernel.abi import EV_CONNECTION, EV_RETRANSMIT, EV_STATE
from ...logformat.entries import LoggedWarning
from ...logformat.escape import escape_comm, escape_token, format_endpoint
from ...logformat.words import EVENT_NAMES, state_name
from ...output.tracker import Tracker
from ...pipeline.decode import TCP_CLOSE, TCP_ESTABLISHED, make_row
from .parse import Summary

TABLE_LIMIT = 100_000  # distinct keys per summary table and per join map


class Process(NamedTuple):
    """A key of the Processes table."""
    pid: int
    comm: str  # escaped


class ResetKey(NamedTuple):
    """A key of the Resets table."""
    kind: int  # EV_RESET_SENT or EV_RESET_RECEIVED
    local: str  # endpoint
    remote_addr: str
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
    """The tables of the connections' summary lines: failed connections by cause and by destination, the top
    connections and processes by bytes, the slowest handshakes, resets by who sent them. Bounded as the
    Report's tables (table_limit keys each; a top-N heap keeps table_limit entries, which is exact for any
    --top up to table_limit)."""

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

    def add(self, r, local, remote):
        rep = self.report
        self.count += 1
        self.seq += 1
        self.sent += r.sent
        self.received += r.received
        comm = escape_comm(r.comm)
        conn = Conn(local, remote, r.pid, comm, r.direction, r.result, r.sent, r.received, r.handshake_us,
                    r.duration_us, r.ts_ns)
        self._top(self.by_bytes, (r.sent + r.received, -self.seq, conn))
        if r.handshake_us is not None:
            self._top(self.handshakes, (r.handshake_us, -self.seq, conn))
        proc = self.proc_bytes.get((r.pid, comm))
        if proc is None and rep._room(self.proc_bytes, "process_bytes"):
            proc = self.proc_bytes[Process(r.pid, comm)] = [0, 0, 0]
        if proc is not None:
            proc[0] += r.sent
            proc[1] += r.received
            proc[2] += 1
        if r.result == "closed":
            return
        self.causes[r.result] += 1
        causes = self.failed_dst.get(remote)
        if causes is None and rep._room(self.failed_dst, "failed_destinations"):
            causes = self.failed_dst[remote] = Counter()
        if causes is not None:
            causes[r.result] += 1
        if r.result == "reset-sent":
            key = (r.pid, comm)
            if key in self.resets_sent:
                self.resets_sent[key] += 1  # the key stays the Process it was added as
            elif rep._room(self.resets_sent, "resets_sent"):
                self.resets_sent[Process(*key)] = 1
        elif r.result == "reset-received":
            if remote in self.resets_received or rep._room(self.resets_received, "resets_received"):
                self.resets_received[remote] += 1

    def _top(self, heap, entry):
        if len(heap) < self.report.table_limit:
            heapq.heappush(heap, entry)
        elif entry > heap[0]:
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


class Report:
    """Bounded: each summary table keeps at most table_limit keys (the first ones seen; the events of the
    others are counted in left_out), the join maps at most max(table_limit, max_conns) (the oldest entry goes),
    and the tracker at most max_conns connections closed and as many open."""

    def __init__(self, filters, since=None, until=None, max_conns=100000, table_limit=TABLE_LIMIT):
        self.filters = filters
        self.since, self.until = since, until
        self.tracker = Tracker(max_conns=max_conns)
        self.table_limit = table_limit
        self.join_limit = max(table_limit, max_conns)
        self.left_out = Counter()  # table -> events it did not count (it was full); "joins" -> entries dropped
        self.ids = OrderedDict()  # (local, remote) -> connection id, for logs without socket addresses
        self.pending = OrderedDict()  # (remote, pid) -> connection id of a SYN_SENT line with local port 0
        self.seq = 0
        self.events = 0
        self.filtered = 0
        self.malformed = 0
        self.first_malformed = None
        self.first = self.last = None
        self.kinds = Counter()
        self.warnings = Counter()  # health warning kind -> warning lines said (not their clearing)
        self.states = Counter()
        self.procs = {}  # Process -> Counter
        # the owner's names, where the logs carry them: unit, container (12 hex), user -> Counter
        self.owners = {"units": {}, "containers": {}, "users": {}}
        self.remotes = Counter()
        self.remote_established = Counter()
        self.resets = Counter()  # ResetKey -> count
        self.records = Records(self)  # the connections' summary lines
        self.summaries_read = 0  # summary lines read, before the time bounds and filters
        # The summary line and the CLOSE line of a connection are joined by (sock, local, remote): a freed
        # socket's address soon serves another connection, and a monitor writes a batch's summary lines
        # after its state changes, so another connection on that address may close in between. Either
        # line may come first.
        self.just_closed = OrderedDict()  # (sock, local, remote) -> the tracker's Connection its CLOSE line ended
        self.early = OrderedDict()  # (sock, local, remote) -> a Summary that came before its CLOSE line
        self.outcomes = OrderedDict()  # the tracker's Connection -> its Summary, for the lifecycles

    def bad(self, where):
        """A malformed line at where ('FILE:LINE')."""
        self.malformed += 1
        if self.first_malformed is None:
            self.first_malformed = where

    def add(self, r):
        """One Record: counted if it passes the time bounds and the filters, and tracked. A Summary goes to
        add_summary."""
        if r.__class__ is Summary:
            return self.add_summary(r)
        if r.__class__ is LoggedWarning:  # counted as the monitor said them (no time bounds, no filters)
            if r.status == "active":
                self.warnings[r.kind] += 1
            return
        if not self._wanted(r):
            self.filtered += 1
            return
        self.events += 1
        if self.first is None or r.ts_ns < self.first:
            self.first = r.ts_ns
        if self.last is None or r.ts_ns > self.last:
            self.last = r.ts_ns
        local = format_endpoint(r.family, r.src, r.sport)
        remote = format_endpoint(r.family, r.dst, r.dport)
        self._count(r, local, remote)
        self.track(r, local, remote)

    def add_summary(self, r):
        """One Summary: to the tables of records (not to the events' tables nor the lifecycles) if it passes
        the time bounds and the filters, which see it as the kernel does: a "connection" event whose state is
        CLOSE (so -s ESTABLISHED drops it, --no-resets does not)."""
        self.summaries_read += 1
        if ((self.since is not None and r.ts_ns < self.since) or (self.until is not None and r.ts_ns > self.until)
                or not self.filters.match(EV_CONNECTION, r.family, r.src, r.sport, r.dst, r.dport, r.pid, r.comm,
                                          TCP_CLOSE)):
            self.filtered += 1
            return
        if self.first is None or r.ts_ns < self.first:
            self.first = r.ts_ns
        if self.last is None or r.ts_ns > self.last:
            self.last = r.ts_ns
        local, remote = format_endpoint(r.family, r.src, r.sport), format_endpoint(r.family, r.dst, r.dport)
        self.records.add(r, local, remote)
        key = (r.sock, local, remote)
        conn = self.just_closed.pop(key, None)
        if conn is not None:  # its lifecycle shows how it ended
            self._outcome(conn, r)
        else:  # its CLOSE line may follow
            _bounded_put(self.early, key, r, self.join_limit)

    def _outcome(self, conn, summary):
        _bounded_put(self.outcomes, conn, summary, self.join_limit)

    def _wanted(self, r):
        if (self.since is not None and r.ts_ns < self.since) or (self.until is not None and r.ts_ns > self.until):
            return False
        return self.filters.match(r.kind, r.family, r.src, r.sport, r.dst, r.dport, r.pid, r.comm, r.newstate,
                                  r.uid, r.user, r.cgroup, r.unit, r.container)

    def _count(self, r, local, remote):
        """The record in the tables: by event, states, processes, units, containers, users, remote endpoints,
        resets."""
        comm = escape_comm(r.comm)
        self.kinds[r.kind] += 1
        proc = self.procs.get((r.pid, comm))  # a plain tuple finds a named key (equal hash and ==)
        if proc is None and self._room(self.procs, "processes"):
            proc = self.procs[Process(r.pid, comm)] = Counter()
        groups = [proc] + self._owner_counts(r)
        count_remote = remote in self.remotes or self._room(self.remotes, "remotes")
        if count_remote:
            self.remotes[remote] += 1
        if r.kind == EV_STATE:
            self.states[r.newstate] += 1
            if r.newstate == TCP_ESTABLISHED:
                for g in groups:
                    if g is not None:
                        g["established"] += 1
                if count_remote:
                    self.remote_established[remote] += 1
        elif r.kind == EV_RETRANSMIT:
            for g in groups:
                if g is not None:
                    g["retransmits"] += 1
        else:
            for g in groups:
                if g is not None:
                    g["resets"] += 1
            reset = (r.kind, local, str(r.dst), r.pid, comm)
            if reset in self.resets:
                self.resets[reset] += 1  # the key stays the ResetKey it was added as
            elif self._room(self.resets, "resets"):
                self.resets[ResetKey(*reset)] = 1

    def _owner_counts(self, r):
        """The record's rows of the units, containers and users tables (each counts its events), those the
        line names."""
        out = []
        user = r.user if r.user is not None else (str(r.uid) if r.uid is not None else None)
        for table, key in (("units", r.unit), ("containers", r.container and r.container[:12]), ("users", user)):
            if key is not None:
                key = escape_token(key)
                counts = self.owners[table].get(key)
                if counts is None and self._room(self.owners[table], table):
                    counts = self.owners[table][key] = Counter()
                if counts is not None:
                    counts["events"] += 1
                    out.append(counts)
        return out

    def _room(self, table, name):
        """True if the table can take one more key; else the event is counted as left out of it."""
        if len(table) < self.table_limit:
            return True
        self.left_out[name] += 1
        return False

    def _join(self, table, key, cid):
        """table[key] = cid, the oldest entry dropped if the table is full."""
        if len(table) >= self.join_limit:
            self.left_out["joins"] += 1
        _bounded_put(table, key, cid, self.join_limit)

    def _conn_id(self, r, local, remote):
        """A made-up socket address for a text line's connection: its 4-tuple, and a SYN_SENT line with
        local port 0 (connect() before the kernel chose the port) joined to the next line of the same
        remote end and process that has the port."""
        tup = (local, remote)
        if r.sport == 0:
            cid = self.pending.get((remote, r.pid))
            if cid is None:
                self.seq += 1
                cid = self.seq
                self._join(self.pending, (remote, r.pid), cid)
        else:
            cid = self.ids.get(tup)
            if cid is None:
                cid = self.pending.pop((remote, r.pid), None)
                if cid is None:
                    self.seq += 1
                    cid = self.seq
                self._join(self.ids, tup, cid)
        if r.kind == EV_STATE and r.newstate == TCP_CLOSE:  # the next one of this 4-tuple is new
            self.ids.pop(tup, None)
            if r.sport == 0:
                self.pending.pop((remote, r.pid), None)
        return cid

    def track(self, r, local, remote):
        """The record to the tracker, as a row of the connection its socket address (or a made-up one) names."""
        if r.sock is not None:
            sk = r.sock
        elif r.newstate == 0:  # a reset answering no socket: the tracker keys it by its addresses
            sk = 0
        else:
            sk = self._conn_id(r, local, remote)
        self.tracker.add(make_row(ts_ns=r.ts_ns, skaddr=sk, type=r.kind, newstate=r.newstate, pid=r.pid,
                                  sport=r.sport, dport=r.dport, saddr=_packed(r.src), daddr=_packed(r.dst),
                                  comm=r.comm, family=r.family))
        if r.newstate == TCP_CLOSE and r.kind == EV_STATE and sk:  # joined to its summary line, either first
            key, conn = (r.sock, local, remote), self.tracker.closed[-1]
            summary = self.early.pop(key, None)
            if summary is not None:
                self._outcome(conn, summary)
            else:  # the oldest dropped if full: its summary, if any, long gone by
                _bounded_put(self.just_closed, key, conn, self.join_limit)

    def summary(self, top):
        """The counts and the first top rows of each table, as the JSON output has them (times in ns)."""
        procs = sorted(self.procs.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))
        return {
            "events": self.events,
            "filtered_out": self.filtered,
            "malformed": self.malformed,
            "first_ns": self.first,
            "last_ns": self.last,
            "by_event": {EVENT_NAMES[k]: n for k, n in sorted(self.kinds.items())},
            "warnings": dict(sorted(self.warnings.items())),
            "states": {state_name(s): n for s, n in self.states.most_common()},
            "processes": [{"pid": p.pid, "comm": p.comm, "established": c["established"],
                           "retransmits": c["retransmits"], "resets": c["resets"]}
                          for p, c in procs[:top]],
            **{table: [{"name": name, "events": c["events"], "established": c["established"],
                        "retransmits": c["retransmits"], "resets": c["resets"]}
                       for name, c in sorted(rows.items(), key=lambda kv: (-kv[1]["events"], kv[0]))[:top]]
               for table, rows in self.owners.items()},
            "remotes": [{"remote": ep, "events": n, "established": self.remote_established[ep]}
                        for ep, n in self.remotes.most_common(top)],
            "resets": [{"event": EVENT_NAMES[k.kind], "local": k.local, "remote_addr": k.remote_addr, "pid": k.pid,
                        "comm": k.comm, "count": n}
                       for k, n in self.resets.most_common(top)],
            **({"connection_summaries": self.records.summary(top)} if self.summaries_read else {}),
            "table_limit": self.table_limit,
            "left_out": dict(sorted(self.left_out.items())),
        }


MAX_HOSTS = 1000  # hosts a central log's report keeps apart; the lines of any more are grouped as OTHER_HOSTS
OTHER_HOSTS = "(other hosts)"


class ByHost:
    """A Report per host, for the files of a central syslog (the host in each line's syslog prefix); lines
    without a prefix (the monitor's own logs) are host None. Malformed lines are counted here, once."""

    def __init__(self, make, max_hosts=MAX_HOSTS):
        self.make = make
        self.max_hosts = max_hosts
        self.reports = {}
        self.malformed = 0
        self.first_malformed = None

    def add(self, r):
        report = self.reports.get(r.host)
        if report is None:
            host = r.host if len(self.reports) < self.max_hosts else OTHER_HOSTS
            report = self.reports.get(host)
            if report is None:
                report = self.reports[host] = self.make()
                report.malformed = None  # counted once for all hosts, here
        report.add(r)

    def bad(self, where):
        self.malformed += 1
        if self.first_malformed is None:
            self.first_malformed = where

    def hosts(self):
        """[(host, Report)]: the lines without a host first, then the hosts by name. One (None, Report), empty
        if need be, when no line has a host: the report of the monitor's own logs, as it always was."""
        if set(self.reports) <= {None}:
            report = self.reports.get(None) or self.make()
            report.malformed, report.first_malformed = self.malformed, self.first_malformed
            return [(None, report)]
        return sorted(self.reports.items(), key=lambda kv: (kv[0] is not None, kv[0] or ""))


def _packed(ip):
    return ip.packed.ljust(16, b"\0")


def _bounded_put(table, key, value, limit):
    """table[key] = value, the oldest entry dropped first if the table holds limit entries."""
    if len(table) >= limit:
        table.popitem(last=False)
    table[key] = value
