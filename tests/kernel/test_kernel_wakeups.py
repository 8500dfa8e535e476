"""The kernel program's wake-ups of the reader (bpf/rings.h: submit_event, reader_awake): none while the
reader is awake (each is an interrupt its CPU sends itself, a virtual machine's exit), and one when a CPU
reaches its mark while the reader sleeps. The real program, loaded in this process, and connections on
loopback to a port of the test's own (the filter keeps other traffic out)."""

import os
import socket
import threading
import time

import pytest

from socketsnoop.kernel.loader import Probe
from socketsnoop.pipeline.filters import Filters
from support.net import free_port

MARK = 4096  # the reader's wake-up mark (and each CPU's): ~35 events


@pytest.fixture
def probe():
    port = free_port()
    p = Probe(Filters({"port": [port]}), buffer_size=1 << 20, wakeup_bytes=MARK, records=False)
    p.port = port
    try:
        p.load()
        p.attach()
        p.open_reader()
        yield p
    finally:
        p.close()


def connections(port, n):
    """n connections to port on loopback, accepted and closed (about ten state changes each)."""
    with socket.create_server(("127.0.0.1", port), backlog=n + 8) as srv:
        for _ in range(n):
            c = socket.create_connection(("127.0.0.1", port))
            s, _ = srv.accept()
            c.close()
            s.close()
    time.sleep(0.3)  # the last closes (FIN_WAIT2, LAST_ACK) settle


@pytest.fixture
def one_cpu():
    """This thread (and those it starts) on one CPU, where loopback's softirqs run too: all the events
    come from that CPU, whose count towards its mark the test then knows."""
    was = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(was)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, was)


def drained(reader):
    """Everything in the ring read, and any wake-up epoll holds taken (it waits edge-triggered)."""
    while reader.pending():
        reader.read()
    reader.epoll.poll(0)


def test_no_wakeup_while_awake_one_when_asleep(probe, one_cpu):
    reader = probe.reader
    drained(reader)
    # awake (RingBuffer says so but while in wait()): the CPU passes its mark many times, no wake-up comes, so
    # epoll, which is only told of data by a wake-up, sleeps out its timeout with all of it unread
    connections(probe.port, 100)
    assert reader.pending() > 8 * MARK
    t0 = time.monotonic()
    assert reader.epoll.poll(1.0) == []
    assert time.monotonic() - t0 >= 0.9
    drained(reader)
    # asleep: the CPU that reaches its mark wakes the reader, long before its timeout
    later = threading.Timer(0.5, connections, (probe.port, 20))
    later.start()
    try:
        t0 = time.monotonic()
        reader.wait(20.0)
        waited = time.monotonic() - t0
    finally:
        later.join()
    assert reader.pending() > 0
    assert waited < 10.0
