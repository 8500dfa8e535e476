"""Owners across network namespaces: a listener older than the monitor, in a network namespace of its own
(as a container's server is), with the real kernel program."""

import pytest

from support.net import free_port, private_netns
from support.procs import run_client, start_server

pytestmark = pytest.mark.bpf


def test_a_listener_older_than_the_monitor_in_another_netns(monitor):
    """The listener starts in a private network namespace before the monitor; a client there connects: the
    accepted connection's events (the handshake's end runs in softirq context, where no owner is at hand)
    carry the listener's PID and COMM, in JSON and in the text line, not PID=0 swapper/0 or the client's."""
    port = free_port()
    with private_netns() as ns:
        srv = start_server("127.0.0.1", port, "ss-nslsn", count=1, netns=ns)
        try:
            mj = monitor("-P", str(port), "--json", "--no-report", "--buffer-size", "1M", log_name="ns.log")
            mt = monitor("-P", str(port), "--no-report", "--buffer-size", "1M", log_name="nst.log")
            run_client("127.0.0.1", port, "ss-nscli", netns=ns)
            srv.communicate(timeout=30)
        finally:
            srv.kill()
        mj.stop()
        mt.stop()
    accepted = [r for r in mj.records() if r["sport"] == port]
    assert accepted and any(r["new_state"] == "ESTABLISHED" for r in accepted), mj.records()
    assert {(r["pid"], r["comm"]) for r in accepted} == {(srv.pid, "ss-nslsn")}, accepted
    est = [r for r in accepted if r["new_state"] == "ESTABLISHED"]
    assert all(r["owner"] == "listener" for r in est), est
    text = [ln for ln in mt.lines() if f"SRC=127.0.0.1:{port} " in ln]
    assert text and all(f" PID={srv.pid} COMM=ss-nslsn " in ln for ln in text), text
