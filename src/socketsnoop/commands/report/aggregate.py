"""The analysis: Records -> counts, the summary tables, and the lifecycles (through output/tracker.py's Tracker).

Bounded whatever the input: each table keeps at most TABLE_LIMIT keys (what it leaves out is counted and
reported), the maps that join a text log's lines into connections at most max(TABLE_LIMIT, max_conns).
"""

from collections import Counter, OrderedDict
from typing import NamedTuple

from ...kernel.abi import EV_RETRANSMIT, EV_STATE
from ...output.formats import escape_comm, format_endpoint
from ...output.tracker import Tracker
from ...pipeline.decode import EVENT_NAMES, TCP_CLOSE, TCP_ESTABLISHED, make_row, state_name

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
        self.states = Counter()
        self.procs = {}  # Process -> Counter
        self.remotes = Counter()
        self.remote_established = Counter()
        self.resets = Counter()  # ResetKey -> count

    def bad(self, where):
        """A malformed line at where ('FILE:LINE')."""
        self.malformed += 1
        if self.first_malformed is None:
            self.first_malformed = where

    def add(self, r):
        """One Record: counted if it passes the time bounds and the filters, and tracked."""
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

    def _wanted(self, r):
        if (self.since is not None and r.ts_ns < self.since) or (self.until is not None and r.ts_ns > self.until):
            return False
        return self.filters.match(r.kind, r.family, r.src, r.sport, r.dst, r.dport, r.pid, r.comm, r.newstate)

    def _count(self, r, local, remote):
        """The record in the tables: by event, states, processes, remote endpoints, resets."""
        comm = escape_comm(r.comm)
        self.kinds[r.kind] += 1
        proc = self.procs.get((r.pid, comm))  # a plain tuple finds a named key (equal hash and ==)
        if proc is None and self._room(self.procs, "processes"):
            proc = self.procs[Process(r.pid, comm)] = Counter()
        count_remote = remote in self.remotes or self._room(self.remotes, "remotes")
        if count_remote:
            self.remotes[remote] += 1
        if r.kind == EV_STATE:
            self.states[r.newstate] += 1
            if r.newstate == TCP_ESTABLISHED:
                if proc is not None:
                    proc["established"] += 1
                if count_remote:
                    self.remote_established[remote] += 1
        elif r.kind == EV_RETRANSMIT:
            if proc is not None:
                proc["retransmits"] += 1
        else:
            if proc is not None:
                proc["resets"] += 1
            reset = (r.kind, local, str(r.dst), r.pid, comm)
            if reset in self.resets:
                self.resets[reset] += 1  # the key stays the ResetKey it was added as
            elif self._room(self.resets, "resets"):
                self.resets[ResetKey(*reset)] = 1

    def _room(self, table, name):
        """True if the table can take one more key; else the event is counted as left out of it."""
        if len(table) < self.table_limit:
            return True
        self.left_out[name] += 1
        return False

    def _join(self, table, key, cid):
        """table[key] = cid, the oldest entry dropped if the table is full."""
        if len(table) >= self.join_limit:
            table.popitem(last=False)
            self.left_out["joins"] += 1
        table[key] = cid

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
            "states": {state_name(s): n for s, n in self.states.most_common()},
            "processes": [{"pid": p.pid, "comm": p.comm, "established": c["established"],
                           "retransmits": c["retransmits"], "resets": c["resets"]}
                          for p, c in procs[:top]],
            "remotes": [{"remote": ep, "events": n, "established": self.remote_established[ep]}
                        for ep, n in self.remotes.most_common(top)],
            "resets": [{"event": EVENT_NAMES[k.kind], "local": k.local, "remote_addr": k.remote_addr, "pid": k.pid,
                        "comm": k.comm, "count": n}
                       for k, n in self.resets.most_common(top)],
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
