"""Warnings about where connections go and what comes in: connect-failures (a destination whose connects
fail), retransmits (a remote host whose segments are sent again) and port-scan (one remote address touching
many closed ports). Fed with the decoded rows the dispatch already has, the few that matter picked at C speed."""

from itertools import compress, repeat
from operator import and_, eq, floordiv, getitem, itemgetter, neg

from ...kernel.abi import DIR_IN, EV_RESET_SENT, OWNER_NONE, RESULT_REFUSED, RESULT_TIMEOUT, RESULT_UNREACHABLE
from ..decode import (
    IDENT,
    NETNS,
    R_NETNS,
    OWNER,
    R_CGROUP,
    R_DIRECTION,
    R_IDENT,
    R_RESULT,
    R_RETRANSMITS,
    R_SENT,
    R_TS,
    R_UID,
    TS,
    TYPE,
)
from .alerts import Alerts, Window, addr_text, bounded_get, owner_of

FAILED = {RESULT_REFUSED: 0, RESULT_TIMEOUT: 1, RESULT_UNREACHABLE: 2}  # the window's column of each cause
CAUSES = ("refused", "timeout", "unreachable")
WINDOW_S = 60
SCAN_WINDOW_S = 10
MIN_RETRANSMITS = 10  # fewer retransmissions in the window never warn, whatever their share
MSS = 1448  # the estimate of a connection's segments: its bytes sent over a common Ethernet MSS
MAX_PORTS = 4096  # distinct ports followed per scanning address
FEW_HOSTS = 3  # hosts followed for retransmissions up to which their records are summed a pass per host
PORT_RANGE = "/proc/sys/net/ipv4/ip_local_port_range"


def ephemeral_ports(path=PORT_RANGE):
    """The local port range connects take their ports from (Linux's default where it cannot be read)."""
    try:
        with open(path) as f:
            lo, hi = map(int, f.read().split())
        return range(lo, hi + 1)
    except (OSError, ValueError):
        return range(32768, 61000)
_r_result = itemgetter(R_RESULT)
_r_retrans = itemgetter(R_RETRANSMITS)
_r_ident = itemgetter(R_IDENT)
_r_netns = itemgetter(R_NETNS)
_r_sent = itemgetter(R_SENT)
_NO_STATE_MARK = bytes([1]) + bytes(255)  # bytes.translate: state 0 -> 1
_DADDR = slice(24, 40)  # identity bytes: the remote address (kernel/abi.py IDENT_STRUCT)


def _procs(table, owner, n=1):
    """Count a process in a destination's table (bounded)."""
    p = bounded_get(table, owner[:2], lambda: [0, owner], 64)
    if p is not None:
        p[0] += n


def _top(table, k=5):
    return sorted(table.values(), key=lambda p: -p[0])[:k]


class ConnectFailures:
    """A destination (address, port) whose outgoing connects failed threshold times or more within WINDOW_S."""

    kind = "connect-failures"
    setting = "connect_failures"  # its Thresholds field

    def __init__(self, t):
        self.threshold = t.connect_failures
        self.alerts = Alerts(self.kind, t.interval)
        self.dests = {}  # (netns, family, daddr, dport) -> [Window(refused, timeout, unreachable), {(pid, comm): [n, Owner]}]
        self.overflow = 0

    def records(self, rows):
        for r in compress(rows, map(FAILED.__contains__, map(_r_result, rows))):
            if r[R_DIRECTION] == DIR_IN:
                continue
            who = r[R_IDENT]
            d = bounded_get(self.dests, (r[R_NETNS], who[56], who[_DADDR], int.from_bytes(who[6:8], "little")),
                            lambda: [Window(WINDOW_S), {}])
            if d is None:
                self.overflow += 1
                continue
            counts = [0, 0, 0]
            counts[FAILED[r[R_RESULT]]] = 1
            d[0].add(r[R_TS], *counts)
            _procs(d[1], owner_of(who, r[R_UID], r[R_CGROUP]))

    def tick(self, now):
        for key, (window, procs) in list(self.dests.items()):
            sums = window.sums(now)
            if sums is None:
                del self.dests[key]
                continue
            n = sum(sums)
            if n >= self.threshold:
                top = _top(procs)
                netns, family, daddr, dport = key
                causes = ", ".join(f"{c} {k}" for k, c in zip(CAUSES, sums) if c)
                self.alerts.update(now, key, top[0][1], (
                    ("dst", addr_text(family, daddr)), ("dport", dport), ("netns", netns), ("failures", n),
                    ("window_s", WINDOW_S),
                    *zip(CAUSES, sums), ("processes", tuple((o.pid, o.comm, c) for c, o in top))),
                    f"{n} connects to this destination failed in {WINDOW_S} s ({causes}): refused means nothing "
                    "listens on the port (a service down or a wrong port), timeout that SYNs go unanswered (a "
                    "firewall dropping them, or the host down), unreachable an ICMP error (no route)")
        return self.alerts.settle(now, "connects to this destination no longer fail past the threshold")


class Retransmits:
    """A remote host whose retransmitted segments pass a share of its segments within WINDOW_S, from the
    connection records (retransmissions counted by the kernel; segments estimated as bytes sent / MSS, plus the
    SYN and FIN, plus the retransmissions), with at least MIN_RETRANSMITS."""

    kind = "retransmits"
    setting = "retransmits"  # its Thresholds field

    def __init__(self, t):
        self.share = t.retransmits / 100
        self.alerts = Alerts(self.kind, t.interval)
        self.hosts = {}  # (netns, family, daddr) -> [Window(retransmits, segments, connections), {(pid, comm): [n, Owner]}]
        self.overflow = 0

    def records(self, rows):
        """The retransmitting records make their host followed; every record to a host followed counts in its
        share (its healthy connections too), summed per host and batch at C speed (a pass per host followed,
        at most FEW_HOSTS; past them, record by record)."""
        retrans = bytes(map(bool, map(_r_retrans, rows)))
        hosts = self.hosts
        if 1 in retrans:
            for r in compress(rows, retrans):
                who = r[R_IDENT]
                h = bounded_get(hosts, (r[R_NETNS], who[56], who[_DADDR]), lambda: [Window(WINDOW_S), {}])
                if h is None:
                    self.overflow += 1
                else:
                    _procs(h[1], owner_of(who, r[R_UID], r[R_CGROUP]), r[R_RETRANSMITS])
        if not hosts:
            return
        if len(hosts) > FEW_HOSTS:
            self._one_by_one(rows)
            return
        daddrs = list(map(getitem, map(_r_ident, rows), repeat(_DADDR)))
        ts = rows[-1][R_TS]
        for (netns, family, daddr), h in hosts.items():
            mask = bytes(map(eq, daddrs, repeat(daddr)))
            if 1 not in mask:
                continue
            mine = list(compress(rows, mask))
            same = bytes(map(and_, map(eq, map(_r_netns, mine), repeat(netns)),
                             map(eq, map(getitem, map(_r_ident, mine), repeat(56)), repeat(family))))
            mine = list(compress(mine, same))
            if mine:
                n_retrans = sum(map(_r_retrans, mine))
                # segments: each connection's bytes sent / MSS, rounded up, plus its SYN and FIN
                segs = -sum(map(floordiv, map(neg, map(_r_sent, mine)), repeat(MSS))) + 2 * len(mine)
                h[0].add(ts, n_retrans, segs + n_retrans, len(mine))

    def _one_by_one(self, rows):
        """Many hosts followed: each record's host looked up at C speed, Python for those followed."""
        idents = list(map(_r_ident, rows))
        found = list(map(self.hosts.get, zip(map(_r_netns, rows), map(getitem, idents, repeat(56)),
                                             map(getitem, idents, repeat(_DADDR)))))
        for r, h in zip(compress(rows, found), filter(None, found)):
            retrans = r[R_RETRANSMITS]
            h[0].add(r[R_TS], retrans, -(-r[R_SENT] // MSS) + 2 + retrans, 1)

    def tick(self, now):
        for key, (window, procs) in list(self.hosts.items()):
            sums = window.sums(now)
            if sums is None:
                del self.hosts[key]
                continue
            retrans, segs, conns = sums
            if retrans >= MIN_RETRANSMITS and retrans >= self.share * segs:
                top = _top(procs)
                pct = round(100 * retrans / segs, 1)
                self.alerts.update(now, key, top[0][1], (
                    ("dst", addr_text(*key[1:])), ("netns", key[0]), ("retransmits", retrans), ("segments", segs), ("percent", pct),
                    ("connections", conns), ("window_s", WINDOW_S),
                    ("processes", tuple((o.pid, o.comm, n) for n, o in top))),
                    f"{pct}% of the segments sent to this host in {WINDOW_S} s were sent again ({retrans} of about "
                    f"{segs}, over {conns} closed connection{'s' if conns != 1 else ''}): packets lost on the path "
                    "(a congested or faulty link, a firewall or policer dropping), or the host too slow to take them")
        return self.alerts.settle(now, "retransmissions to this host are below the threshold now")


class PortScan:
    """One remote address touching threshold or more distinct closed local ports (a reset sent, no socket)
    within SCAN_WINDOW_S. A closed port of the local ephemeral range is passed over: what reaches one is most
    often the late packet of a connection of ours that is gone (a peer still sending to a client socket closed
    or killed: a mass close reads as a scan from the server's address), while a scan probes services."""

    kind = "port-scan"
    setting = "port_scan"  # its Thresholds field
    states = (0,)  # the events it needs: a reset sent for no socket has no state

    def __init__(self, t):
        self.threshold = t.port_scan
        self.alerts = Alerts(self.kind, t.interval)
        self.sources = {}  # (netns, family, remote address) -> {local port: last time}
        self.overflow = 0
        self.ephemeral = ephemeral_ports()

    def events(self, rows, news):
        if 0 in news:  # a reset sent for no socket has no state (0); every other event has one
            self._resets(compress(rows, news.translate(_NO_STATE_MARK)))

    def _resets(self, rows):
        for r in rows:
            if r[TYPE] != EV_RESET_SENT or r[OWNER] != OWNER_NONE:
                continue
            who = r[IDENT]
            port = int.from_bytes(who[4:6], "little")
            if port in self.ephemeral:
                continue
            ports = bounded_get(self.sources, (r[NETNS], who[56], who[_DADDR]), dict)
            if ports is None:
                self.overflow += 1
                continue
            if port in ports or len(ports) < MAX_PORTS:
                ports[port] = r[TS]

    def tick(self, now):
        cut = now - SCAN_WINDOW_S * 1_000_000_000
        for key, ports in list(self.sources.items()):
            for port in [p for p, ts in ports.items() if ts < cut]:
                del ports[port]
            if not ports:
                del self.sources[key]
            elif len(ports) >= self.threshold:
                self.alerts.update(now, key, None, (
                    ("src", addr_text(*key[1:])), ("netns", key[0]), ("ports", len(ports)), ("lowest", min(ports)),
                    ("highest", max(ports)), ("window_s", SCAN_WINDOW_S)),
                    f"this address touched {len(ports)} closed ports in {SCAN_WINDOW_S} s, each answered with a "
                    "reset: a port scan, or a client configured with many wrong ports")
        return self.alerts.settle(now, "this address no longer touches closed ports past the threshold")
