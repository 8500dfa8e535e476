"""The journal and syslog outputs' pieces without the kernel: the fields, the encodings, the options, the
config keys, the unit's sandbox, and the journal's memfd path against a real (namespaced) journald."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest
from socketsnoop.commands import service
from socketsnoop.settings.monitor import options_from_config
from socketsnoop.kernel import abi
from socketsnoop.logformat.base import Clock
from socketsnoop.logformat.fields import FieldsFormatter
from socketsnoop.logformat.jsonline import JsonFormatter
from socketsnoop.logformat.text import TextFormatter
from socketsnoop.output.journal import MESSAGE_IDS, JournalSink, field, field_name
from socketsnoop.output.queued import EVENTS, Message
from socketsnoop.output.syslog import UDP_MAX, SyslogSink, parse_url, sd_value
from socketsnoop.pipeline import decode

from support.collectors import journald

HOSTILE = [b"audacious", b"\nSOCKETSNOOP_X=", b'a]"\\=\xff\x01z', b"", b"-", "é\u202e".encode()]


def rows():
    v6a, v6b = socket.inet_pton(socket.AF_INET6, "2001:db8::1"), socket.inet_pton(socket.AF_INET6, "::1")
    out = []
    for i, comm in enumerate(HOSTILE):
        for typ in (abi.EV_STATE, abi.EV_RETRANSMIT, abi.EV_RESET_SENT, abi.EV_RESET_RECEIVED):
            out.append(decode.make_row(ts_ns=i * 1_234_567_891, skaddr=0xFFFF0000 + i, netns=4026531840, type=typ,
                                       oldstate=i % 3, newstate=(i * 5) % 14, owner=i % 5, pid=i * 100,
                                       sport=1000 + i, dport=443, comm=comm.ljust(16, b"\0"),
                                       family=6 if i % 2 else 4,
                                       saddr=v6a if i % 2 else bytes([10, 0, 0, i]) + bytes(12),
                                       daddr=v6b if i % 2 else bytes([10, 0, 0, 9]) + bytes(12)))
    return out


def test_fields_are_the_json_lines_keys_and_values():
    clock = Clock()
    lines = JsonFormatter(clock).lines(rows())
    fields = FieldsFormatter(clock).fields(rows())
    assert fields == [json.loads(line) for line in lines]
    assert [list(f) for f in fields] == [list(json.loads(line)) for line in lines]  # the same order


@pytest.mark.parametrize("lines_are_text", [True, False])
def test_outputs_encode_rows_as_they_encode_messages(lines_are_text):
    """The outputs' fast path (FieldsEncoder, from the rows) gives the bytes of the general one (a Message
    per event: the text line and FieldsFormatter's dict)."""
    clock = Clock()
    lines = (TextFormatter(clock) if lines_are_text else JsonFormatter(clock)).lines(rows())
    texts = TextFormatter(clock).lines(rows())
    messages = [Message(t[:-1], f) for t, f in zip(texts, FieldsFormatter(clock).fields(rows()))]
    for sink in (JournalSink(clock, lines_are_text, path="/nonexistent", warn=lambda m: None),
                 SyslogSink(clock, lines_are_text, "tcp://127.0.0.1:1", warn=lambda m: None)):
        fast = sink.payloads(EVENTS, rows(), lines)
        slow = [sink.encode(m) for m in messages]
        if isinstance(sink, SyslogSink):
            assert [n for _, n in fast] == [len(m.text) for m in messages]
            fast = [d for d, _ in fast]
        assert fast == slow, sink.name


def test_journal_field_encoding():
    assert field_name("new_state") == "SOCKETSNOOP_NEW_STATE" and field_name("a-b") == "SOCKETSNOOP_A_B"
    assert field(b"SOCKETSNOOP_COMM", "nginx") == b"SOCKETSNOOP_COMM=nginx\n"
    v = "\nSOCKETSNOOP_X="
    assert field(b"SOCKETSNOOP_COMM", v) == b"SOCKETSNOOP_COMM\n" + len(v).to_bytes(8, "little") + v.encode() + b"\n"


def _msg(fields, text="Dec 01 2026 00:00:00.000 State Change: SRC=..."):
    return Message(text, fields)


def test_syslog_message():
    s = SyslogSink(Clock(), True, "tcp://127.0.0.1:1", warn=lambda m: None)
    m = _msg({"timestamp": "2026-12-01T00:00:00.000Z", "event": "reset_sent", "comm": 'a]"\\b', "old_state": None,
              "pid": 7})
    data = s.encode(m)
    head, rest = data.split(b" [", 1)
    assert head.startswith(b"<28>1 2026-12-01T00:00:00.000Z ") and head.endswith(b" socket-snoop %d reset_sent"
                                                                                 % os.getpid())
    assert rest.startswith(b'socketsnoop@32473 event="reset_sent" comm="a\\]\\"\\\\b" pid="7"] Dec 01 2026')
    assert b"old_state" not in data  # null values are left out
    assert sd_value('x"]\\') == 'x\\"\\]\\\\'
    # no control character or line separator raw in a value: a name "a<LF><ESC>[2J<NEL><LS>b"
    assert sd_value("a\n\x1b[2J\x85\u2028\x7fb") == "a\\x0a\\x1b[2J\\x85\\u2028\\x7fb"
    info = s.encode(_msg({"event": "state_change"}))
    assert info.startswith(b"<30>1 ")  # daemon.info


def test_syslog_udp_cut_keeps_structured_data_whole():
    s = SyslogSink(Clock(), True, "udp://127.0.0.1:1", warn=lambda m: None)
    long_text = "x" * 5000
    m = _msg({"event": "state_change", "comm": "c"}, long_text)
    cut = s._fit(s.encode(m), len(m.text))
    assert len(cut) == UDP_MAX and b'comm="c"] xxx' in cut and s.truncated == 1
    m = _msg({"event": "state_change", "comm": "c" * 5000}, "short")
    cut = s._fit(s.encode(m), len(m.text))
    assert len(cut) <= UDP_MAX and b"[" not in cut and cut.endswith(b" - short") and s.truncated == 2


@pytest.mark.parametrize("url,want", [("udp://10.0.0.1:514", "udp://10.0.0.1:514"), ("tcp://logs", "tcp://logs:514"),
                                      ("tls://[2001:db8::1]", "tls://[2001:db8::1]:6514")])
def test_urls(url, want):
    assert str(parse_url(url)) == want


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "socketsnoop", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("bad", ["http://x:1", "udp://", "tcp://x:99999", "tcp:///path", "x"])
def test_bad_url_is_one_line(bad):
    r = _cli("--syslog", bad)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--syslog" in r.stderr and "Traceback" not in r.stderr


def test_config_keys(tmp_path):
    conf = tmp_path / "c.toml"
    conf.write_text('journal = true\njournal-socket = "/run/j/socket"\nsyslog = "tls://logs.example.org:6514"\n'
                    'syslog-facility = "local3"\nsyslog-ca = "/etc/ca.pem"\noutput-queue = 500\n')
    o = options_from_config(str(conf))
    assert o.journal and o.journal_socket == "/run/j/socket" and str(o.syslog) == "tls://logs.example.org:6514"
    assert o.syslog_facility == "local3" and o.syslog_ca == "/etc/ca.pem" and o.output_queue == 500
    for bad, key in (('syslog = "smtp://x"\n', "syslog"), ('syslog-facility = "nope"\n', "syslog-facility"),
                     ("output-queue = 0\n", "output-queue")):
        conf.write_text(bad)
        r = _cli("--config", str(conf))
        assert r.returncode == 2 and f"line 1: {key}:" in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_missing_ca_file_is_one_line(tmp_path):
    r = _cli("--syslog", "tls://127.0.0.1:1", "--syslog-ca", str(tmp_path / "none.pem"), "--no-log-file")
    if os.geteuid() != 0:
        pytest.skip("the monitor stops at 'needs root' first")
    assert r.returncode == 2 and "--syslog-ca" in r.stderr and r.stderr.count("\n") == 1, r.stderr


def _unit(tmp_path, text):
    conf = tmp_path / "c.toml"
    conf.write_text(text)
    units = tmp_path / "units"
    r = subprocess.run([sys.executable, "-m", "socketsnoop", "service", "install", "--config", str(conf),
                        "--unit-dir", str(units), "--logrotate-dir", str(tmp_path / "rot")],
                       capture_output=True, text=True, timeout=60, cwd="/")
    assert r.returncode == 0, r.stderr
    return units / "socket-snoop.service"


@pytest.mark.parametrize("conf,families,ip", [
    ("", "AF_UNIX AF_NETLINK", ["IPAddressDeny=any"]),
    ("journal = true\n", "AF_UNIX AF_NETLINK", ["IPAddressDeny=any"]),
    ('syslog = "tcp://127.0.0.1:514"\n', "AF_UNIX AF_INET AF_NETLINK",
     ["IPAddressDeny=any", "IPAddressAllow=127.0.0.1"]),
    ('syslog = "tls://logs.example.org"\njournal = true\n', "AF_UNIX AF_INET AF_INET6 AF_NETLINK", []),
])
def test_unit_sandbox_follows_the_outputs(tmp_path, conf, families, ip):
    unit = _unit(tmp_path, conf)
    lines = unit.read_text().splitlines()
    assert f"RestrictAddressFamilies={families}" in lines
    assert [x for x in lines if x.startswith("IPAddress")] == ip
    # the config is under /tmp (tmp_path): the unit keeps the host's /tmp so that the monitor can read it
    assert "PrivateTmp=no" in lines and "ProtectHome=yes" in lines
    if shutil.which("systemd-analyze"):
        r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and "socket-snoop.service" not in r.stderr, r.stderr


def test_unit_keeps_a_journal_socket_under_tmp_visible(tmp_path):
    lines = _unit(tmp_path, 'journal-socket = "/tmp/j/socket"\nsyslog = "tls://logs.example.org"\n'
                  'syslog-ca = "/root/ca.pem"\n').read_text().splitlines()
    assert "PrivateTmp=no" in lines and "ProtectHome=read-only" in lines
    assert "RestrictAddressFamilies=AF_UNIX AF_NETLINK" in service.render_unit(["/usr/bin/socket-snoop"]).splitlines()


@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/lib/systemd/systemd-journald"),
                    reason="needs root and systemd-journald")
def test_journal_large_entry_goes_through_a_memfd():
    with journald() as j:
        sink = JournalSink(Clock(), True, path=j.socket, warn=lambda m: None).open()
        big = "y" * (1 << 20)  # more than a datagram can hold (the socket's send buffer)
        sink.notice("Lost Events: a test", {"event": "lost_events", "note": big, "comm": "a\nb"})
        sink.notice("small", {"event": "state_change"})
        sink.close()
        assert sink.dropped() == 0 and sink.large == 1
        for _ in range(100):
            entries = j.entries()
            if len(entries) == 2:
                break
            time.sleep(0.1)
        assert [e["MESSAGE"] for e in entries] == ["Lost Events: a test", "small"]
        assert entries[0]["SOCKETSNOOP_NOTE"] == big and entries[0]["SOCKETSNOOP_COMM"] == "a\nb"
        assert entries[0]["PRIORITY"] == "4" and entries[1]["PRIORITY"] == "6"


def conn_record(comm=b"\nSOCKETSNOOP_X=", result=abi.RESULT_REFUSED):
    return decode.make_record_row(ts_ns=2_000_000, skaddr=0xFFFF1234, start_ns=1_000_000, states=(7, 2, 7),
                                  netns=4026531840, result=result, pid=42, sport=40000, dport=9,
                                  saddr=bytes([127, 0, 0, 1]) + bytes(12), daddr=bytes([127, 0, 0, 1]) + bytes(12),
                                  comm=comm.ljust(16, b"\0"))


@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/lib/systemd/systemd-journald"),
                    reason="needs root and systemd-journald")
def test_journal_connection_records_are_queryable_by_result():
    with journald() as j:
        sink = JournalSink(Clock(), True, path=j.socket, warn=lambda m: None).open()
        recs = [conn_record(), conn_record(b"ok", abi.RESULT_CLOSED)]
        sink.write_records(recs, TextFormatter(sink.clock).record_lines(recs))
        sink.close()
        for _ in range(100):
            if len(j.entries()) == 2:
                break
            time.sleep(0.1)
        refused = j.entries("SOCKETSNOOP_RESULT=refused")
        assert len(refused) == 1 and refused[0]["PRIORITY"] == "4"
        assert refused[0]["SOCKETSNOOP_COMM"] == "\nSOCKETSNOOP_X=" and "SOCKETSNOOP_X" not in refused[0]
        assert refused[0]["SOCKETSNOOP_EVENT"] == "connection" and "\n" not in refused[0]["MESSAGE"]
        assert "Connection Summary: SRC=127.0.0.1:40000" in refused[0]["MESSAGE"]
        assert refused[0]["SOCKETSNOOP_STATES"] == '["CLOSE","SYN_SENT","CLOSE"]', refused[0]
        assert [e["PRIORITY"] for e in j.entries("SOCKETSNOOP_RESULT=closed")] == ["6"]


@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/lib/systemd/systemd-journald"),
                    reason="needs root and systemd-journald")
@pytest.mark.parametrize("json_lines", [False, True])
def test_journal_entries_have_a_message_id_per_kind(json_lines):
    """`journalctl MESSAGE_ID=...` finds exactly the entries of one event kind: state changes, retransmits,
    resets both ways, connection records, lost events and health warnings each have their own fixed 128-bit id."""
    ids = list(MESSAGE_IDS.values())
    assert len(set(ids)) == len(ids) == 7 and all(len(i) == 32 and int(i, 16) >= 0 and i == i.lower() for i in ids)
    clock = Clock()
    with journald() as j:
        sink = JournalSink(clock, not json_lines, path=j.socket, warn=lambda m: None, json_lines=json_lines).open()
        events = rows()
        sink.write(events, (JsonFormatter(clock) if json_lines else TextFormatter(clock)).lines(events))
        recs = [conn_record(), conn_record(b"ok", abi.RESULT_CLOSED)]
        sink.write_records(recs, (JsonFormatter(clock) if json_lines else TextFormatter(clock))
                           .record_lines(recs))
        sink.notice("Lost Events: 3", {"event": "lost_events", "lost": 3, "missed": 0})
        sink.write_warnings([], None, [("Warning: port-scan status=active",
                                        {"event": "warning", "kind": "port-scan", "status": "active"})])
        sink.close()
        total = len(events) + len(recs) + 2
        for _ in range(100):
            if len(j.entries()) == total:
                break
            time.sleep(0.1)
        assert len(j.entries()) == total
        for kind, mid in MESSAGE_IDS.items():
            got = j.entries(f"MESSAGE_ID={mid}")
            assert got and {e["SOCKETSNOOP_EVENT"] for e in got} == {kind}, (kind, got[:1])
        assert sum(len(j.entries(f"MESSAGE_ID={mid}")) for mid in ids) == total
