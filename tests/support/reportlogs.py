"""Realistic logs for the report's differential test and bench/report, written by the monitor's own formatters
(logformat/): connections of many processes in flight at once (their events interleaved, socket addresses
reused after close), client and server sides, failures (refused, timeout, resets either way), retransmissions,
resets answering no socket, each connection's summary line, a few IPv6 connections and names that need
escaping; text or JSON, with the owner's names or not, optionally behind a central rsyslog's prefix (hosts).
"""

import gzip
import random

from socketsnoop.kernel import abi
from socketsnoop.logformat.base import Clock
from socketsnoop.logformat.jsonline import JsonFormatter
from socketsnoop.logformat.text import TextFormatter
from socketsnoop.pipeline.decode import make_record_row, make_row
from socketsnoop.pipeline.identity import Owner

EPOCH_NS = 1_733_000_000 * 10**9  # Nov 30 2024: the logs' first second
COMMS = [b"curl", b"nginx", b"postgres", b"redis-server", b"python3", b"java", b"sshd", b"Web Content", b"a\x1bb",
         b"node", b"envoy", b"-", b"tokio-runtime-w", b"\xffbin"]
SERVICES = (443, 80, 5432, 6379, 8080, 53, 9090, 40000)
LISTEN = (22, 80, 443, 8443, 45000)
RESULTS = [abi.RESULT_CLOSED] * 90 + [abi.RESULT_REFUSED] * 3 + [abi.RESULT_RESET_RECEIVED] * 3 + \
          [abi.RESULT_RESET_SENT] * 2 + [abi.RESULT_TIMEOUT] * 1 + [abi.RESULT_UNREACHABLE] * 1


class Names:
    """An identity (as pipeline.identity.Identity's owner()) that names a few users and units by uid."""

    def owner(self, cgroup, uid, pid, comm=None):
        unit = f"svc{uid % 7}.service"
        return Owner(uid, f"user{uid % 5}", f"/system.slice/{unit}", unit, None, None, "/usr/bin/x"), True


def _v4(a, b, c, d):
    return bytes((a, b, c, d)) + bytes(12)


def _v6(n):
    return bytes.fromhex("20010db8000000000000000000000000")[:14] + n.to_bytes(2, "big")


class Connection:
    """One connection's steps: (kind, old state, new state), then its record."""

    def __init__(self, i, rnd):
        self.i = i
        self.pid = 1000 + rnd.randrange(500)
        self.comm = COMMS[self.pid % len(COMMS)]
        self.uid = self.pid % 3 * 1000
        self.v6 = rnd.random() < 0.02
        self.out = rnd.random() < 0.7
        self.result = rnd.choice(RESULTS)
        self.sock = 0xFFFF888000000000 + (i % 40000) * 0x100
        self.local = _v6(1) if self.v6 else _v4(10, 0, 0, 1)
        peer = rnd.randrange(3000)
        self.remote = _v6(2 + peer) if self.v6 else _v4(192, 168, peer >> 8, peer & 255)
        if self.out:
            self.sport, self.dport = 32768 + rnd.randrange(28000), rnd.choice(SERVICES)
        else:
            self.sport, self.dport = rnd.choice(LISTEN), 32768 + rnd.randrange(28000)
        self.steps = self._steps(rnd)
        self.next = 0
        self.start = None
        self.sent, self.received = rnd.randrange(1 << rnd.randrange(1, 30)), rnd.randrange(1 << rnd.randrange(1, 30))

    def _steps(self, rnd):
        st, rt, rs, rr = abi.EV_STATE, abi.EV_RETRANSMIT, abi.EV_RESET_SENT, abi.EV_RESET_RECEIVED
        if self.out:
            if self.result in (abi.RESULT_REFUSED, abi.RESULT_UNREACHABLE):
                return [(st, 7, 2), (rr, 2, 2), (st, 2, 7)]
            if self.result == abi.RESULT_TIMEOUT:
                return [(st, 7, 2), (rt, 2, 2), (rt, 2, 2), (st, 2, 7)]
            head = [(st, 7, 2), (st, 2, 1)]
        else:
            head = [(st, 10, 12), (st, 12, 3), (st, 3, 1)] if rnd.random() < 0.3 else [(st, 3, 1)]
        mid = [(rt, 1, 1)] * (rnd.random() < 0.1)
        if self.result == abi.RESULT_RESET_RECEIVED:
            return head + mid + [(rr, 1, 1), (st, 1, 7)]
        if self.result == abi.RESULT_RESET_SENT:
            return head + mid + [(rs, 1, 1), (st, 1, 7)]
        tail = [(st, 1, 4), (st, 4, 5), (st, 5, 7)] if self.out else [(st, 1, 8), (st, 8, 9), (st, 9, 7)]
        return head + mid + tail

    def event(self, ts, kind, old, new):
        sport = 0 if self.out and new == 2 and kind == abi.EV_STATE else self.sport
        return make_row(ts_ns=ts, skaddr=self.sock, netns=4026531840, type=kind, oldstate=old, newstate=new,
                        owner=abi.OWNER_SOCKET, pid=self.pid, sport=sport, dport=self.dport, saddr=self.local,
                        daddr=self.remote, comm=self.comm, family=6 if self.v6 else 4, uid=self.uid, cgroup=5)

    def record(self, ts, rnd):
        states = [new for kind, _old, new in self.steps if kind == abi.EV_STATE]
        handshake = rnd.randrange(20_000, 200_000_000) if 1 in states else 0
        return make_record_row(
            ts_ns=ts, skaddr=self.sock, start_ns=self.start, handshake_ns=handshake, bytes_sent=self.sent,
            bytes_received=self.received, cgroup=5, states=tuple(states[:15]), netns=4026531840,
            retransmits=sum(k == abi.EV_RETRANSMIT for k, _o, _n in self.steps), rtt_us=rnd.randrange(0, 90_000),
            uid=self.uid, result=self.result, direction=abi.DIR_OUT if self.out else abi.DIR_IN,
            owner=abi.OWNER_SOCKET, pid=self.pid, sport=self.sport, dport=self.dport, saddr=self.local,
            daddr=self.remote, comm=self.comm, family=6 if self.v6 else 4)


def generate(lines, seed=1, in_flight=64):
    """(is a record, row) of about `lines` lines in all."""
    rnd = random.Random(seed)
    ts, made, i = 0, 0, 0
    live = []
    while made < lines:
        while len(live) < in_flight:
            live.append(Connection(i, rnd))
            i += 1
        ts += rnd.randrange(1, 3_000_000)
        made += 1
        if rnd.random() < 0.01:  # a reset answering no socket
            yield False, make_row(ts_ns=ts, type=abi.EV_RESET_SENT, newstate=0, owner=abi.OWNER_NONE, sport=22,
                                  dport=50000 + rnd.randrange(1000), saddr=_v4(10, 0, 0, 1),
                                  daddr=_v4(203, 0, 113, 7))
            continue
        k = rnd.randrange(len(live))
        c = live[k]
        if c.start is None:
            c.start = ts
        yield False, c.event(ts, *c.steps[c.next])
        c.next += 1
        if c.next == len(c.steps):
            live[k] = live[-1]
            live.pop()
            made += 1
            yield True, c.record(ts + 1000, rnd)


def write_log(path, lines, form="text", context=False, hosts=0, gz=False, seed=1):
    """A log of about `lines` lines at path: form "text" or "json"; context: the owner's names (JSON: the
    monitor's default with names; text: --context); hosts: behind a central rsyslog's prefix (RFC 3164, as
    its default file format writes), hosts taking turns; gz: gzip-compressed."""
    clock = Clock()
    clock.offset_ns = EPOCH_NS
    names = Names() if context else None
    fmt = JsonFormatter(clock, names) if form == "json" else TextFormatter(clock, names, context=context)
    opener = gzip.open if gz else open
    with opener(path, "wt", encoding="utf-8") as f:
        run, records = [], False
        for is_record, row in generate(lines, seed):
            if is_record != records or len(run) >= 4096:
                _write(f, fmt, run, records, hosts)
                run, records = [], is_record
            run.append(row)
        _write(f, fmt, run, records, hosts)


def _write(f, fmt, rows, records, hosts):
    if not rows:
        return
    out = fmt.record_lines(rows) if records else fmt.lines(rows)
    if hosts:
        out = [f"Dec  1 21:05:58 host{(row[1] >> 8) % hosts} socket-snoop[{(row[1] >> 8) % hosts + 100}]: "
               f"{line}" for row, line in zip(rows, out)]
    f.writelines(out)
