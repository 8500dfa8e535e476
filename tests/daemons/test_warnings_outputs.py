"""Health warnings on every output, against the real programs: the JSON log line, a namespaced journald
(PRIORITY warning, SOCKETSNOOP_WARNING=KIND), rsyslogd (MSGID warning) and the metrics endpoint
(socketsnoop_warnings_total{kind}); the owner's hostile name escaped as in every other line."""

import json
import time

import pytest
from support.collectors import journald, rsyslogd
from support.net import free_port, private_netns
from support.procs import Monitor, spawn
from support.prom import sample_sum, scrape
from support.system import sh

from socketsnoop.logformat.escape import comm_text, escape_comm
from socketsnoop.output.journal import MESSAGE_IDS

pytestmark = pytest.mark.bpf

HOSTILE = b'a]"\\=\xff\n z'  # a task name that breaks SD values, journal fields and lines if not escaped
PROBE = """
import ctypes, socket
ctypes.CDLL(None).prctl(15, {comm!r}, 0, 0, 0)
for port in list(range({first}, {first} + 30)) + [{first}] * 3:
    c = socket.socket()
    try:
        c.connect(('127.0.0.1', port))
    except ConnectionRefusedError:
        pass
    c.close()
print('done', flush=True)
"""


def _until(pred, timeout=20):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = pred()
        if got:
            return got
        time.sleep(0.3)
    return pred()


def test_warnings_reach_every_output(tmp_path):
    first, mport = free_port(), free_port()
    with private_netns() as ns, journald() as j, rsyslogd(tmp_path) as r:
        inode = sh("ip", "netns", "exec", ns, "stat", "-L", "-c", "%i", "/proc/self/ns/net").stdout.strip()
        mon = Monitor(tmp_path, "--json", "--journal-socket", j.socket, "--syslog", r.url("udp"), "--metrics",
                      str(mport), "--warn", "port-scan=20", "--warn", "connect-failures=3", warnings=True).start()
        try:
            p = spawn(PROBE, netns=ns, comm=HOSTILE, first=first)
            assert p.communicate(timeout=30)[0].strip() == "done"

            def ours():
                found = {}
                for line in mon.lines():
                    d = json.loads(line)
                    if d["event"] == "warning" and d.get("netns") == int(inode):
                        found.setdefault(d["kind"], d)
                return found if len(found) == 2 else None
            found = _until(ours)
            assert found, mon.lines()[-5:]
            scan, fails = found["port-scan"], found["connect-failures"]
            assert (scan["status"], scan["ports"], scan["src"], scan["lowest"]) == ("active", 30, "127.0.0.1", first)
            assert "pid" not in scan and scan["message"].startswith("this address touched 30 closed ports")
            assert (fails["dport"], fails["failures"], fails["refused"], fails["pid"]) == (first, 4, 4, p.pid)
            assert fails["comm"] == comm_text(HOSTILE)
            assert fails["processes"] == [{"pid": p.pid, "comm": comm_text(HOSTILE), "count": 4}]

            entries = _until(lambda: [e for e in j.entries("SOCKETSNOOP_WARNING=connect-failures")
                                      if e.get("SOCKETSNOOP_NETNS") == inode])
            assert entries, j.entries()[-3:]
            e = entries[0]
            assert (e["PRIORITY"], e["SOCKETSNOOP_KIND"], e["SOCKETSNOOP_COMM"]) == ("4", "connect-failures",
                                                                                     comm_text(HOSTILE))
            assert e["SOCKETSNOOP_DPORT"] == str(first) and "Warning: connect-failures status=active" in e["MESSAGE"]
            assert e["MESSAGE_ID"] == MESSAGE_IDS["warning"]
            assert e["SOCKETSNOOP_PROCESSES"] == f"{escape_comm(HOSTILE)}({p.pid})x4"

            def syslog_ours():
                return [m for m in r.messages("udp") if m[2] == "warning" and m[3][1].get("netns") == inode]
            msgs = _until(syslog_ours)
            assert sorted({m[3][1]["kind"] for m in msgs}) == ["connect-failures", "port-scan"], msgs
            assert all(m[0] == "warning" for m in msgs), msgs

            samples = scrape(mport)
            assert sample_sum(samples, "socketsnoop_warnings_total", kind="port-scan") >= 1
            assert sample_sum(samples, "socketsnoop_warnings_total", kind="connect-failures") >= 1
        finally:
            mon.stop()
