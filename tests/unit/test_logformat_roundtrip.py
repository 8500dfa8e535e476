"""The log format's round trip: every event kind and every connection record, written as text and as JSON
(with and without the owner's names), read back by the reader that `report` uses, gives the fields it was
made from; hostile names (COMM, user, unit, pod) come back byte for byte. And the dict forms of the JSON
line (the journal's and syslog's fields) have its keys and values."""

import ipaddress
import itertools
import json
import re
import socket
import time

import pytest
from socketsnoop.kernel import abi
from socketsnoop.logformat import escape
from socketsnoop.logformat.base import Clock, STATES
from socketsnoop.logformat.escape import unescape_comm
from socketsnoop.logformat.entries import LoggedConnection, LoggedEvent, LoggedWarning, Malformed
from socketsnoop.logformat.fields import FieldsFormatter
from socketsnoop.logformat.jsonline import CONNECTION_KEYS, DROP_KEYS, EVENT_KEYS, JsonFormatter
from socketsnoop.logformat.reader import Parser
from socketsnoop.logformat.text import TextFormatter
from socketsnoop.logformat.warning import WarningLines
from socketsnoop.kernel.dropreasons import reason_name
from socketsnoop.logformat.words import DIRECTION_NAMES, RESULT_NAMES, drop_reasons
from socketsnoop.output.metrics import OTHER, MetricsSink, comm_label
from socketsnoop.pipeline import health
from socketsnoop.pipeline.decode import IDENT, make_record_row, make_row, states_of
from socketsnoop.pipeline.identity import Owner

HOSTILE_COMMS = [
    b"audacious", b"a\nb", b"\\xff", b"\xff", b"\\x00", b"\\", b"x\x1b[2J\x07\x7f", b"COMM=x STATE=", b"a\rb\tc",
    b"caf\xc3\xa9", "\u202eé".encode(), b"\xc3", b"-", b"", b'"q"]}{=,', b"\x01" * 15, b"\\x2d", b"Dec 30 2024 ",
]
HOSTILE_NAMES = ["a b\nc", "x=y.service", "-", "\\x41", "\udcff\u202e", "USER=root", "caf\u00e9"]
V6A, V6B = socket.inet_pton(socket.AF_INET6, "2001:db8::1"), socket.inet_pton(socket.AF_INET6, "::ffff:1.2.3.4")
V4A, V4B = bytes([10, 0, 0, 1]) + bytes(12), bytes([192, 168, 7, 9]) + bytes(12)
CONTAINER = "4f1c0b5e" * 8
# drop reasons: named on any kernel that has them (NO_SOCKET is 2 or 3), and a value no kernel names
DROP_VALUES = (3, 40, 250)


@pytest.fixture
def clock(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    c = Clock()
    c.offset_ns = 1735596325454000000  # 2024-12-30 22:05:25.454 UTC at monotonic 0
    yield c
    monkeypatch.undo()
    time.tzset()


class Names:
    """An identity (pipeline.identity.Identity's owner()) that knows every name, hostile ones too."""

    def __init__(self, user="nobody", unit="x.service", pod="8b9a2c1d-3e4f-4a5b-8c7d-6e5f4a3b2c1d"):
        self.user, self.unit, self.pod = user, unit, pod

    def owner(self, cgroup, uid, pid, comm=None):
        return Owner(uid, self.user, f"/system.slice/{self.unit}", self.unit, CONTAINER, self.pod, "/bin/x"), True


def raw(comm):
    return comm.split(b"\0", 1)[0]


def events():
    """Every event kind, IPv4 and IPv6, every hostile COMM, states and owners varied; no process (pid 0)."""
    out = []
    kinds = (abi.EV_STATE, abi.EV_RETRANSMIT, abi.EV_RESET_SENT, abi.EV_RESET_RECEIVED, abi.EV_DROP)
    for i, (comm, kind) in enumerate(itertools.product(HOSTILE_COMMS, kinds)):
        v6 = i % 2
        out.append(make_row(ts_ns=i * 1_001_000_000, skaddr=0xFFFF8881_0000_0000 + i, netns=4026531840 + i, type=kind,
                            ino=DROP_VALUES[i % len(DROP_VALUES)] if kind == abi.EV_DROP else 0,
                            oldstate=i % 13, newstate=(i * 5) % 14, owner=i % 5, pid=1 + i * 977, sport=(i * 41) % 65536,
                            dport=65535 - i, comm=comm, family=6 if v6 else 4, saddr=V6A if v6 else V4A,
                            daddr=V6B if v6 else V4B, uid=i * 1000, cgroup=9))
    out.append(make_row(type=abi.EV_RESET_SENT, newstate=0, owner=abi.OWNER_NONE, pid=0, comm=b"", sport=1, dport=2,
                        saddr=V4A, daddr=V4B))
    return out


def records():
    """Every result, direction, with and without handshake and RTT, complete or not, states cut or none."""
    out = []
    shapes = [dict(states=(2, 1, 4, 5, 7)), dict(states=(2, 7), handshake_ns=0, rtt_us=0),
              dict(states=(4, 5, 7), flags=abi.R_INCOMPLETE), dict(states=(1,) * 15 + (7,), flags=abi.R_STATES_CUT),
              dict(states=(), flags=abi.R_INCOMPLETE), dict(states=(3, 1, 8, 9, 7), start_ns=0)]
    for i, (result, direction, shape, comm) in enumerate(itertools.product(
            RESULT_NAMES, (abi.DIR_OUT, abi.DIR_IN, abi.DIR_UNKNOWN), shapes, HOSTILE_COMMS[::3])):
        v6 = i % 2
        kw = dict(ts_ns=10**9 + i * 7_000_000, start_ns=10**9 - 12_345_000, handshake_ns=41_000 + i * 1000,
                  rtt_us=30 + i, bytes_sent=i * 10**9, bytes_received=2**64 - 1 - i, retransmits=i, uid=2**32 - 1 - i,
                  result=result, direction=direction, owner=i % 5, pid=5 + i, comm=comm, sport=40000 + i, dport=8000,
                  skaddr=0xFFFF0000 + i, netns=7, cgroup=9, family=6 if v6 else 4, saddr=V6A if v6 else V4A,
                  daddr=V6B if v6 else V4B)
        kw.update(shape)
        if i % 3 == 1:  # packets dropped: the first reasons kept, in the order seen
            kw["drop_slots"] = ((DROP_VALUES[i % len(DROP_VALUES)], 2), (DROP_VALUES[(i + 1) % len(DROP_VALUES)], 7))
        out.append(make_record_row(**kw))
    return out


def event_fields(row, ts_ns, json_line, names):
    """What a reader must give for an event row: the LoggedEvent's fields."""
    ts, sk, ino, _ns, typ, _old, new, _own, _fl, who, uid, _cg = row
    pid, sport, dport, saddr, daddr, comm, family = abi.IDENT_STRUCT.unpack(who)
    reason = reason_name(ino) if typ == abi.EV_DROP else None
    addr = (lambda b: str(ipaddress.ip_address(b[:4] if family == 4 else b)))
    container = names and (CONTAINER if json_line else CONTAINER[:12])
    return dict(ts_ns=ts_ns, kind=typ, family=family, src=addr(saddr), sport=sport, dst=addr(daddr), dport=dport,
                pid=pid, comm=raw(comm), newstate=new, sock=(sk or None) if json_line else None,
                uid=uid if json_line and names else None, user=names and names.user,
                cgroup=names and json_line and f"/system.slice/{names.unit}" or None, unit=names and names.unit,
                container=container or None, pod=names and names.pod, reason=reason)


def record_fields(row, ts_ns, json_line, names):
    """What a reader must give for a record row: the LoggedConnection's fields."""
    (ts, sk, start, handshake, sent, received, _cg, _ino, packed, _ns, retrans, rtt, uid, result, direction,
     nstates, flags, _own, who, drops, slots) = row
    pid, sport, dport, saddr, daddr, comm, family = abi.IDENT_STRUCT.unpack(who)
    addr = (lambda b: str(ipaddress.ip_address(b[:4] if family == 4 else b)))
    complete = not flags & abi.R_INCOMPLETE
    return dict(ts_ns=ts_ns, family=family, src=addr(saddr), sport=sport, dst=addr(daddr), dport=dport, pid=pid,
                comm=raw(comm), result=RESULT_NAMES[result], direction=DIRECTION_NAMES.get(direction),
                duration_us=(ts - start) // 1000 if start and complete else None,
                handshake_us=handshake // 1000 or None, sent=sent, received=received, retransmits=retrans,
                rtt_us=rtt or None, uid=uid, states=tuple(STATES[s] for s in states_of(packed, nstates)),
                states_cut=bool(flags & abi.R_STATES_CUT), complete=bool(complete),
                sock=(sk or None) if json_line else None, host=None, user=names and names.user,
                cgroup=names and json_line and f"/system.slice/{names.unit}" or None, unit=names and names.unit,
                container=(names and (CONTAINER if json_line else CONTAINER[:12])) or None, pod=names and names.pod,
                drops=drops, drop_reason=next(iter(drop_reasons(slots)), None))


def as_read(entry):
    d = entry._asdict()
    d["src"], d["dst"] = str(d["src"]), str(d["dst"])
    d.pop("host", None) if isinstance(entry, LoggedEvent) else None
    return d


def formatters(clock, names):
    """(label, formatter, is JSON, the names its lines carry) for every format the monitor writes."""
    return [("text", TextFormatter(clock).show_drops(), False, None),
            ("text --context", TextFormatter(clock, names, context=True).show_drops(), False, names),
            ("text, names known but no --context", TextFormatter(clock, names).show_drops(), False, None),
            ("json", JsonFormatter(clock).show_drops(), True, None),
            ("json with names", JsonFormatter(clock, names).show_drops(), True, names)]


def read(parser, line):
    try:
        return parser.parse(line)
    except Malformed as e:
        return e


def mismatches(clock, names):
    """Every line that does not read back as what it was made from: [(format, line, expected, read)]."""
    bad, parser = [], Parser()
    for label, fmt, json_line, carried in formatters(clock, names):
        for row, line in zip(events(), fmt.lines(events())):
            expected = event_fields(row, clock.offset_ns + row[0] // 10**6 * 10**6, json_line, carried)
            expected.pop("host", None)
            got = read(parser, line)
            if type(got) is not LoggedEvent or as_read(got) != expected:
                bad.append((label, line, expected, got))
        for row, line in zip(records(), fmt.record_lines(records())):
            expected = record_fields(row, clock.offset_ns + row[0] // 10**6 * 10**6, json_line, carried)
            got = read(parser, line)
            if type(got) is not LoggedConnection or as_read(got) != expected:
                bad.append((label, line, expected, got))
    return bad


@pytest.mark.parametrize("names", [Names(), *(Names(n, n + ".service", n) for n in HOSTILE_NAMES)],
                         ids=lambda n: ascii(n.user))
def test_every_line_reads_back_as_it_was_made(clock, names):
    bad = mismatches(clock, names)
    assert not bad, f"{len(bad)} lines read back otherwise, e.g. {bad[0]}"


def test_lines_are_one_line_and_printable(clock):
    for _label, fmt, _j, _n in formatters(clock, Names("a\nb\x1b", "u\u202e.service", "p\r")):
        for line in fmt.lines(events()) + fmt.record_lines(records()):
            assert line.endswith("\n") and line.count("\n") == 1 and line[:-1].isprintable() and line.isascii()


def test_empty_name_is_not_no_process(clock):
    text = TextFormatter(clock)
    process, nobody = (text.format(make_row(pid=pid, comm=b"", saddr=V4A, daddr=V4B)) for pid in (7, 0))
    assert " PID=7 COMM=\\x00 STATE=" in process and " PID=0 COMM=- STATE=" in nobody
    assert escape.escape_comm(b"", pid=7) != escape.escape_comm(b"") == "-"


def test_json_names_are_injective():
    """The text '\\xff' and the byte 0xff (and '\\\\' and '\\x5c') never give the same JSON/journal/syslog value."""
    names = [b"\\xff", b"\xff", b"\\", b"\\\\", b"\\x5c", b"a\\b", b"\xc3", b"\\xc3", b"\xc3\xa9"]
    texts = [escape.comm_text(n) for n in names]
    assert len(set(texts)) == len(names), texts
    assert [escape.comm_from_json(t) for t in texts] == names


def test_fields_are_the_json_lines(clock):
    """The journal's and syslog's fields (as dicts, no line parsed) have the JSON line's keys, in its order, and
    its values; those keys are EVENT_KEYS and CONNECTION_KEYS."""
    fields, js = FieldsFormatter(clock), JsonFormatter(clock)
    for dicts, lines, keys in ((fields.fields(events()), js.lines(events()), EVENT_KEYS),
                               (fields.record_fields(records()), js.record_lines(records()), CONNECTION_KEYS)):
        parsed = [json.loads(line) for line in lines]
        assert dicts == parsed
        # a record of a connection with drops: DROP_KEYS after the others
        assert all(list(d) in (list(keys), list(keys) + list(DROP_KEYS)) for d in dicts + parsed)
        assert keys == EVENT_KEYS or any(len(d) > len(keys) for d in dicts)


class Partial:
    """An identity that knows only some names, none for no process (pid 0), and says its answer is not final
    (a cgroup not found yet): the names that are None are left out."""

    def walks(self):
        return 0

    def owner(self, cgroup, uid, pid, comm=None):
        return Owner(uid if pid else None, None, None, None, None, None, "-" if pid else None, "u@.service"), False


@pytest.mark.parametrize("names", [Names(), Partial(), *(Names(user=h, unit=h, pod=h) for h in HOSTILE_NAMES)])
def test_fields_with_names_are_the_json_lines_with_names(clock, names):
    """--json's journal and syslog fields: the owner's names in them as in the JSON line (after "comm" of an
    event, in place of a record's "uid"), the same keys in the same order with the same values, twice over
    (the second time from the formatters' caches)."""
    fields, js = FieldsFormatter(clock, names), JsonFormatter(clock, names)
    for _ in range(2):
        for dicts, lines in ((fields.fields(events()), js.lines(events())),
                             (fields.record_fields(records()), js.record_lines(records()))):
            assert [list(d.items()) for d in dicts] == [list(json.loads(line).items()) for line in lines]
    assert {"user", "unit", "pod"} <= set(fields.fields(events())[0]) or isinstance(names, Partial)
    assert {"user_unit", "exe"} <= set(fields.record_fields(records())[0]) or not isinstance(names, Partial)


def test_the_round_trip_finds_a_broken_escape(clock, monkeypatch):
    """The check itself: a formatter that leaves one byte unescaped (a space) fails it."""
    broken = dict(escape._ESCAPES)
    broken[0x20] = " "
    monkeypatch.setattr(escape, "_ESCAPES", broken)
    assert mismatches(clock, Names())


def test_metric_labels_are_injective_and_other_is_no_name():
    """Issue 19.12 in the metrics: two names never share a comm label, and the overflow value is none's."""
    names = [b"\\xff", b"\xff", b"\\", b"\\\\", b"\x85", b"\xc2\x85", b"\\u0085", b"\n", b"\\n", b"other", b"-",
             b"\\x2d", b"other (past the", b"", "\u202e".encode(), b"\\x00", None]  # None: no process
    labels = [comm_label(n) for n in names]
    assert len(set(labels)) == len(names), labels
    assert OTHER not in labels
    # a label without an escape ('\\') has at most COMM_LEN - 1 characters (one per byte at most): OTHER has more
    assert "\\" not in OTHER and len(OTHER) > abi.COMM_LEN - 1
    assert all(c.isprintable() for label in labels for c in label)


def test_metrics_tell_a_process_named_empty_from_no_process():
    """The metrics sink counts by the comm bytes and the owner kind: a reset sent by no process (OWNER_NONE) and
    one by a process named with the empty string have the same comm bytes, and different labels."""
    sink = MetricsSink(labels={"comm": 10})
    rows = [make_row(type=abi.EV_RESET_SENT, owner=abi.OWNER_NONE, pid=0, comm=b""),
            make_row(type=abi.EV_RESET_SENT, owner=abi.OWNER_SOCKET, pid=7, comm=b"")]
    sink.write(rows, None)
    assert sorted(label for _typ, _state, label in sink.events) == ["-", "\\x00"]


def warning_cases():
    """Health warnings (pipeline/health's HealthWarning) of every shape: with a hostile owner, with processes whose
    names are hostile, with no owner (a port scan), cleared."""
    out = []
    for i, comm in enumerate(HOSTILE_COMMS):
        owner = health.Owner(4000 + i, raw(comm), 1000, 7, make_row(pid=4000 + i, comm=comm)[IDENT])
        out.append(health.HealthWarning(i * 10**6 + 17, "close-wait-leak", health.ACTIVE, owner,
                                  (("sockets", 3), ("growth", -1), ("threshold_s", 0.5), ("seen", 2)), "words, here"))
        out.append(health.HealthWarning(i * 10**6, "connect-failures", health.CLEARED, owner,
                                  (("dst", "2001:db8::1"), ("dport", 443), ("processes", ((9, raw(comm), 4),))), "x"))
    out.append(health.HealthWarning(5, "port-scan", health.ACTIVE, None, (("src", "10.0.0.1"), ("ports", 100)), "scan"))
    return out


def test_a_warning_list_of_processes_cannot_be_forged(clock):
    """A process's name in a warning's processes=NAME(PID)xN,... list cannot add an entry or change one: its ',',
    '(' and ')' are escaped, and each entry reads back as the name it was."""
    names = [b"x(1)x99,sshd", b"a,b", b"(", b")x1", b"ok"]
    w = health.HealthWarning(5, "connect-failures", health.ACTIVE, None, (
        ("dst", "10.0.0.1"), ("dport", 443), ("processes", tuple((100 + i, n, 2) for i, n in enumerate(names)))), "x")
    line = WarningLines(TextFormatter(clock)).lines([w])[0]
    value = next(word for word in line.split() if word.startswith("processes="))[len("processes="):]
    entries = value.split(",")
    assert len(entries) == len(names), value
    for i, (entry, name) in enumerate(zip(entries, names)):
        m = re.fullmatch(r"([^(),]+)\((\d+)\)x(\d+)", entry)
        assert m and unescape_comm(m.group(1)) == name and int(m.group(2)) == 100 + i, entry


@pytest.mark.parametrize("names", [Names(), Names(*(HOSTILE_NAMES[0],) * 3)], ids=("names", "hostile names"))
def test_warning_lines_read_back_and_fields_are_the_json(clock, names):
    """A warning line, in every format, is one printable line that reads back as its kind, status and owner;
    its fields (the journal's and syslog's) are its JSON line's."""
    parser = Parser()
    for label, fmt, json_line, _carried in formatters(clock, names):
        lines = WarningLines(fmt)
        for w, line in zip(warning_cases(), lines.lines(warning_cases())):
            assert line.endswith("\n") and line[:-1].isprintable() and line.count("\n") == 1, (label, line)
            got = parser.parse(line)
            pid, comm = (w.owner.pid, w.owner.comm) if w.owner else (0, b"")
            assert (type(got), got.kind, got.status, got.pid, got.comm) == (LoggedWarning, w.kind, w.status, pid,
                                                                            comm), (label, line)
            assert got.ts_ns == clock.offset_ns + w.ts_ns // 10**6 * 10**6
            assert lines.fields(w)["timestamp"] == JsonFormatter(clock).stamp(w.ts_ns)  # RFC 3339 in any format
            if json_line:
                assert json.loads(line) == lines.fields(w)
            else:
                assert f" Warning: {w.kind} status={w.status}" in line and " -- " in line
