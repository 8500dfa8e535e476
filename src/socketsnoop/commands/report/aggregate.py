"""The analysis: parsed log entries -> counts, the summary tables, the distributions and the lifecycles.

Bounded whatever the input: each table keeps at most TABLE_LIMIT keys, the maps that join a text log's lines
into connections at most max(TABLE_LIMIT, max_conns), and all of them, for every host, draw on one byte
budget (bounds.py); names are cut to a length. What a table leaves out is counted and reported.
"""

from collections import Counter, OrderedDict
from typing import NamedTuple

from ...kernel.abi import EV_CONNECTION, EV_RETRANSMIT, EV_STATE
from ...logformat.entries import LoggedWarning
from ...logformat.escape import format_endpoint
from ...logformat.words import EVENT_NAMES, state_name
from ...pipeline.decode import TCP_CLOSE, TCP_ESTABLISHED
from ...pipeline.health import KIND_NAMES
from .bounds import ENTRY_BYTES, JOIN_BYTES, LIFECYCLE_BYTES, SUMMARY_BYTES, TABLE_BYTES, Budget, Names, \
    bounded_put
from .histograms import PerMinute
from .lifecycles import Lifecycles
from .parse import Summary
from .summaries import Process, Records

TABLE_LIMIT = 100_000  # distinct keys per summary table and per join map
EPHEMERAL = 32768  # Linux's first ephemeral port by default (net.ipv4.ip_local_port_range)

MAX_DROP_REASONS = 256  # distinct drop reasons the report keeps (the kernel has about 130)


def warning_kind(r):
    """The row a warning line (LoggedWarning) counts in, or None: its kind if it says the warning is active (a kind
    the monitor does not have, a forged line: "other", one row rather than one each), None if cleared."""
    if r.status != "active":
        return None
    return r.kind if r.kind in KIND_NAMES else "other"


class ResetKey(NamedTuple):
    """A key of the Resets table."""
    kind: int  # EV_RESET_SENT or EV_RESET_RECEIVED
    local: str  # endpoint
    remote_addr: str
    pid: int
    comm: str  # escaped


class Shared:
    """What every host's report shares: the tables' and the lifecycles' byte budgets, and the names cut."""

    def __init__(self, table_bytes=TABLE_BYTES, lifecycle_bytes=LIFECYCLE_BYTES):
        self.tables = Budget(table_bytes)
        self.lifecycles = Budget(lifecycle_bytes)
        self.names = Names()


class Report:
    """Bounded: each summary table keeps at most table_limit keys (the first ones seen; the events of the
    others are counted in left_out), the join maps at most max(table_limit, max_conns) (the oldest entry goes),
    and the lifecycles at most max_conns connections closed and as many open; all within shared's budgets."""

    def __init__(self, filters, since=None, until=None, max_conns=100000, table_limit=TABLE_LIMIT, shared=None):
        self.filters = filters
        self.since, self.until = since, until
        self.shared = shared = shared or Shared()
        self.budget, self.names = shared.tables, shared.names
        self.lifecycles = Lifecycles(shared.lifecycles, max_conns=max_conns)
        self.table_limit = table_limit
        self.join_limit = max(table_limit, max_conns)
        self.left_out = Counter()  # table -> events it did not count (it was full); "joins" -> entries dropped
        self.ids = OrderedDict()  # (local, remote) -> connection id, for logs without socket addresses
        self.pending = OrderedDict()  # (remote, pid) -> connection id of a SYN_SENT line with local port 0
        self.seq = 0
        self.events = 0
        self.filtered = 0
        self.malformed = 0  # None in a host's report: ByHost counts the lines set aside, once for all hosts
        self.first_malformed = None
        self.blank = self.too_long = 0
        self.first = self.last = None
        self.kinds = Counter()
        self.warnings = Counter()  # health warning kind -> warning lines said (not their clearing)
        # connections whose summary says the kernel dropped packets: their most frequent reason -> connections
        # (at most MAX_DROP_REASONS names: a forged log's others are "other"), and the packets
        self.drop_reasons, self.dropped = Counter(), 0
        self.states = Counter()
        self.procs = {}  # Process -> Counter
        # the owner's names, where the logs carry them: unit, container (12 hex), user -> Counter
        self.owners = {"units": {}, "containers": {}, "users": {}}
        self.remotes = Counter()  # _service's keys
        self.remote_established = Counter()
        # connections a minute: summary lines, and ESTABLISHED lines (shown for a log without summary lines)
        self.per_minute, self.established_per_minute = PerMinute(self.budget), PerMinute(self.budget)
        self.resets = Counter()  # ResetKey -> count
        self.records = Records(self)  # the connections' summary lines
        self.summaries_read = 0  # summary lines read, before the time bounds and filters
        # The summary line and the CLOSE line of a connection are joined by (sock, local, remote): a freed
        # socket's address soon serves another connection, and a monitor writes a batch's summary lines
        # after its state changes, so another connection on that address may close in between. Either
        # line may come first.
        self.just_closed = OrderedDict()  # (sock, local, remote) -> the lifecycle its CLOSE line ended
        self.early = OrderedDict()  # (sock, local, remote) -> a Summary that came before its CLOSE line
        self.outcomes = OrderedDict()  # a lifecycle's Connection -> its Summary

    def bad(self, where):
        """A malformed line at where ('FILE:LINE')."""
        self.malformed += 1
        if self.first_malformed is None:
            self.first_malformed = where

    def add(self, r):
        """One log entry (parse.Record): counted if it passes the time bounds and the filters, and followed in
        its lifecycle. A Summary goes to add_summary."""
        if r.__class__ is Summary:
            return self.add_summary(r)
        if r.__class__ is LoggedWarning:  # counted as the monitor said them (no time bounds, no filters)
            kind = warning_kind(r)
            if kind is not None:
                self.warnings[kind] += 1
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
        comm = self.names.comm(r.comm, r.pid)
        conn = self.track(r, local, remote, comm)
        self._count(r, local, comm, self._service(r, remote, conn))

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
        comm = self.names.comm(r.comm, r.pid)
        self.records.add(r, local, remote, comm)
        if r.drops:
            reason = r.drop_reason or "-"
            known = reason in self.drop_reasons or len(self.drop_reasons) < MAX_DROP_REASONS
            self.drop_reasons[reason if known else "other"] += 1
            self.dropped += r.drops
        self.per_minute.add(r.ts_ns)
        self.join_summary(r, local, remote)

    def join_summary(self, r, local, remote):
        """A Summary joined to the lifecycle its CLOSE line ended, whichever of the two lines comes first (the
        report's fast path calls it too, with each summary line wanted, in order)."""
        if len(r.comm) > 16:
            r = r._replace(comm=r.comm[:16])  # kept for its numbers only: a forged long name would cost memory
        key = (r.sock, local, remote)
        conn = self.just_closed.pop(key, None)
        if conn is not None:  # its lifecycle shows how it ended
            self.budget.give(JOIN_BYTES)
            self._outcome(conn, r)
        else:  # its CLOSE line may follow
            bounded_put(self.early, key, r, self.join_limit, self.budget, SUMMARY_BYTES)

    def _outcome(self, conn, summary):
        bounded_put(self.outcomes, conn, summary, self.join_limit, self.budget, SUMMARY_BYTES)

    def _wanted(self, r):
        if (self.since is not None and r.ts_ns < self.since) or (self.until is not None and r.ts_ns > self.until):
            return False
        return self.filters.match(r.kind, r.family, r.src, r.sport, r.dst, r.dport, r.pid, r.comm, r.newstate,
                                  r.uid, r.user, r.cgroup, r.unit, r.container)

    def _service(self, r, remote, conn):
        """The Remote endpoints table's key of an entry: (remote, "remote", port) if the service is the remote's
        port, else (we serve it: the remote's port is a client's) (its address with ':*', "local", our port).
        The side is the lifecycle's (from its first state); unknown, ours if our port is not ephemeral and the
        remote's is, or ours is privileged and the remote's is not."""
        side = conn.side if conn is not None else None
        if side is None:
            side = "server" if 0 < r.sport < EPHEMERAL <= r.dport or 0 < r.sport < 1024 <= r.dport else "client"
        if side == "client":
            return remote, "remote", r.dport
        return remote[:remote.rindex(":")] + ":*", "local", r.sport

    def _count(self, r, local, comm, service):
        """The entry in the tables: by event, states, processes, units, containers, users, remote endpoints,
        resets."""
        self.kinds[r.kind] += 1
        proc = self.procs.get((r.pid, comm))  # a plain tuple finds a named key (equal hash and ==)
        if proc is None and self._room(self.procs, "processes", ENTRY_BYTES + len(comm)):
            proc = self.procs[Process(r.pid, comm)] = Counter()
        groups = [proc] + self._owner_counts(r)
        remote = service
        count_remote = remote in self.remotes or self._room(self.remotes, "remotes", ENTRY_BYTES + len(remote[0]))
        if count_remote:
            self.remotes[remote] += 1
        if r.kind == EV_STATE:
            self.states[r.newstate] += 1
            if r.newstate == TCP_ESTABLISHED:
                self.established_per_minute.add(r.ts_ns)
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
            elif self._room(self.resets, "resets", ENTRY_BYTES + len(local) + len(comm)):
                self.resets[ResetKey(*reset)] = 1

    def _owner_counts(self, r):
        """The entry's rows of the units, containers and users tables (each counts its events), those the
        line names."""
        out = []
        user = r.user if r.user is not None else (str(r.uid) if r.uid is not None else None)
        for table, key in (("units", r.unit), ("containers", r.container and r.container[:12]), ("users", user)):
            if key is not None:
                key = self.names.name(key)
                counts = self.owners[table].get(key)
                if counts is None and self._room(self.owners[table], table, ENTRY_BYTES + len(key)):
                    counts = self.owners[table][key] = Counter()
                if counts is not None:
                    counts["events"] += 1
                    out.append(counts)
        return out

    def _room(self, table, name, cost):
        """True if the table can take one more key of cost bytes; else the event is counted as left out of it."""
        if len(table) < self.table_limit and self.budget.take(cost):
            return True
        self.left_out[name] += 1
        return False

    def _join(self, table, key, cid):
        """table[key] = cid, the oldest entry dropped if the table is full."""
        if len(table) >= self.join_limit or self.budget.used + JOIN_BYTES > self.budget.limit:
            self.left_out["joins"] += 1
        bounded_put(table, key, cid, self.join_limit, self.budget, JOIN_BYTES)

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
                cid = self._unjoin(self.pending, (remote, r.pid))
                if cid is None:
                    self.seq += 1
                    cid = self.seq
                self._join(self.ids, tup, cid)
        if r.kind == EV_STATE and r.newstate == TCP_CLOSE:  # the next one of this 4-tuple is new
            self._unjoin(self.ids, tup)
            if r.sport == 0:
                self._unjoin(self.pending, (remote, r.pid))
        return cid

    def _unjoin(self, table, key):
        """table.pop(key, None), its bytes given back."""
        cid = table.pop(key, None)
        if cid is not None:
            self.budget.give(JOIN_BYTES)
        return cid

    def track(self, r, local, remote, comm):
        """The entry to the lifecycle of the connection its socket address (or a made-up one) names; that
        lifecycle's Connection, or None if none was kept."""
        if r.sock is not None:
            sk = r.sock
        elif r.newstate == 0:  # a reset answering no socket: a connection of its own
            sk = 0
        else:
            sk = self._conn_id(r, local, remote)
        conn = self.lifecycles.add(sk, r, comm)
        if conn is not None and r.newstate == TCP_CLOSE and r.kind == EV_STATE and sk:  # joined to its summary
            key = (r.sock, local, remote)
            summary = self.early.pop(key, None)
            if summary is not None:
                self.budget.give(SUMMARY_BYTES)
                self._outcome(conn, summary)
            else:  # the oldest dropped if full: its summary, if any, long gone by
                bounded_put(self.just_closed, key, conn, self.join_limit, self.budget, JOIN_BYTES)
        return conn

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
            "drops": {"packets": self.dropped, "connections": sum(self.drop_reasons.values()),
                      "by_reason": dict(self.drop_reasons.most_common(top))},
            "states": {state_name(s): n for s, n in self.states.most_common()},
            "processes": [{"pid": p.pid, "comm": p.comm, "established": c["established"],
                           "retransmits": c["retransmits"], "resets": c["resets"]}
                          for p, c in procs[:top]],
            **{table: [{"name": name, "events": c["events"], "established": c["established"],
                        "retransmits": c["retransmits"], "resets": c["resets"]}
                       for name, c in sorted(rows.items(), key=lambda kv: (-kv[1]["events"], kv[0]))[:top]]
               for table, rows in self.owners.items()},
            "remotes": [{"remote": ep, "events": n, "established": self.remote_established[key], "service": side,
                         "service_port": port} for key, n in self.remotes.most_common(top) for ep, side, port in (key,)],
            "resets": [{"event": EVENT_NAMES[k.kind], "local": k.local, "remote_addr": k.remote_addr, "pid": k.pid,
                        "comm": k.comm, "count": n}
                       for k, n in self.resets.most_common(top)],
            **({"connection_summaries": self.records.summary(top)} if self.summaries_read else {}),
            "table_limit": self.table_limit,
            "left_out": dict(sorted(self.left_out.items())),
            "distributions": self.distributions(),
        }

    def minutes(self):
        """Connections a minute: from the summary lines if the logs have them, else from ESTABLISHED lines."""
        return self.per_minute if self.summaries_read else self.established_per_minute

    def distributions(self):
        """The log2 histograms of the summary lines' times (microseconds) and the connections per minute."""
        r = self.records
        return {
            **{name: [{"low": lo, "high": hi, "count": n} for lo, hi, n in h.rows()] for name, h in (
                ("duration_us", r.durations), ("handshake_us", r.handshake_times), ("rtt_us", r.rtts))},
            "connections_per_minute": [{"minute_ns": m * 60_000_000_000, "minutes": step, "count": n}
                                       for m, step, n in self.minutes().rows()],
            "connections_per_minute_from": "summary lines" if self.summaries_read else "ESTABLISHED lines",
        }


MAX_HOSTS = 1000  # hosts a central log's report keeps apart; the lines of any more are grouped as OTHER_HOSTS
OTHER_HOSTS = "(other hosts)"


class ByHost:
    """A Report per host, for the files of a central syslog (the host in each line's syslog prefix); lines
    without a prefix (the monitor's own logs) are host None. Malformed lines are counted here, once, and
    the reader's blank and cut lines (lines: files.LineCounts)."""

    def __init__(self, make, lines, names, max_hosts=MAX_HOSTS):
        self.make = make
        self.lines = lines
        self.names = names
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
            report.blank, report.too_long = self.lines.blank, self.lines.too_long
            return [(None, report)]
        return sorted(self.reports.items(), key=lambda kv: (kv[0] is not None, kv[0] or ""))
