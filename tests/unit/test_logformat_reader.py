"""The reader on lines it did not write: crafted to make a backtracking pattern take quadratic time (issue 19.1),
and the lines of --context (issue 19.9) and of an empty COMM (19.12) that the monitor does write."""

import time

import pytest
from socketsnoop.logformat.entries import LoggedConnection, LoggedEvent, Malformed
from socketsnoop.logformat.reader import Parser

EVENT = "Dec 30 2024 22:05:25.454 State Change: SRC=10.0.0.1:1 DST=10.0.0.2:2 PID=1 COMM=x STATE="
SUMMARY = ("Dec 30 2024 22:05:25.454 Connection Summary: SRC=10.0.0.1:1 DST=10.0.0.2:2 PID=1 COMM=x RESULT=closed "
           "DIR=out DURATION=1.000ms HANDSHAKE=- SENT=1 RECEIVED=2 RETRANSMITS=0 RTT=- UID=0 STATES=")
SYSLOG_5424 = "<30>1 2024-12-30T22:05:25.454Z host1 socket-snoop 123 state_change "
SYSLOG_3164 = "Dec 30 22:05:25 host1 socket-snoop[123]: "


def crafted(n):
    """Lines of about n characters shaped against backtracking: runs of spaces before a last character
    (the shape that took 15 s at 64,000 characters), of '=' and keys, of escapes, behind syslog prefixes."""
    pad = " " * n
    return [
        EVENT + "Connection Established" + pad + "x",
        EVENT + "a" + pad + "x",
        EVENT + pad + "x",
        EVENT + "Connection Established USER=" + "a" * n + " x",
        EVENT + "Connection Established" + " USER=a" * (n // 7),
        EVENT + "=" * n,
        EVENT[:-6] + pad + "STATE=Connection Established",
        EVENT.replace("COMM=x", "COMM=" + "\\x" * (n // 2)) + "Connection Established",
        SUMMARY + "ESTABLISHED" + pad + "x",
        SUMMARY + "A>" * (n // 2),
        SUMMARY + "CLOSE" + " USER=a" * (n // 7),
        SYSLOG_5424 + "[x" + ' a="' + "\\\"" * (n // 2) + pad,
        SYSLOG_5424 + "[" + "[" * n,
        "<30>1 " + "a " * (n // 2),
        "<30>1 " + "a" * n + " host socket-snoop",
        SYSLOG_3164 + EVENT + "Connection Established" + pad + "x",
        "Dec 30 22:05:25 " + "h" * n,
        "{" + pad + "x",
    ]


@pytest.mark.parametrize("n", [16_000, 64_000])
def test_crafted_lines_take_linear_time(n):
    """50 crafted lines of 16,000 to 64,000 characters: well under a second together (the backtracking pattern
    of before took about 1 s for ONE such line of 16,000 characters, 15 s for one of 64,000)."""
    parser = Parser()
    lines = (crafted(n) * 3)[:50]
    start = time.process_time()
    for line in lines:
        try:
            parser.parse(line)
        except Malformed:
            pass
    took = time.process_time() - start
    assert took < 0.5, f"{took:.2f} s for 50 lines of about {n} characters"


def test_time_grows_linearly():
    """Four times the length, about four times the time (not sixteen): measured on the slowest shapes."""
    parser = Parser()

    def cost(n):
        lines = crafted(n)
        start = time.process_time()
        for _ in range(5):
            for line in lines:
                try:
                    parser.parse(line)
                except Malformed:
                    pass
        return time.process_time() - start

    cost(1000)
    assert cost(64_000) < 12 * max(cost(16_000), 0.002)


def test_the_crafted_lines_are_read_when_they_are_ours():
    """Not a rejection of everything: the padded lines that are ours (trailing spaces) are read."""
    parser = Parser()
    r = parser.parse(EVENT + "Connection Established" + " " * 64_000)
    assert type(r) is LoggedEvent and r.newstate == 1
    s = parser.parse(SUMMARY + "SYN_SENT>CLOSE" + " " * 64_000 + "\n")
    assert type(s) is LoggedConnection and s.states == ("SYN_SENT", "CLOSE")
    for bad in ("Connection Established USER=a b", "Connection Established UNIT=a USER=b",
                "Connection Established USER=", "Connection Established CONTAINER=4f1c0b5e4f1", "Connection  Established",
                "Connection Established\tUSER=a"):
        with pytest.raises(Malformed):
            parser.parse(EVENT + bad)


def test_context_summary_lines_are_read():
    """Issue 19.9: `report` read none of its own --context summary lines (the pattern ended at STATES=)."""
    line = SUMMARY + "SYN_SENT>CLOSE USER=www-data UNIT=nginx.service CONTAINER=4f1c0b5e4f1c POD=8b9a2c1d\n"
    s = Parser().parse(line)
    assert (s.states, s.user, s.unit, s.container, s.pod) == (
        ("SYN_SENT", "CLOSE"), "www-data", "nginx.service", "4f1c0b5e4f1c", "8b9a2c1d")


def test_empty_comm_of_a_process_is_read():
    """Issue 19.12: COMM=\\x00 is a process named with the empty string; COMM=- no process."""
    p = Parser()
    named = p.parse(EVENT.replace("COMM=x", "COMM=\\x00").replace("PID=1", "PID=7") + "Connection Established")
    none = p.parse(EVENT.replace("COMM=x", "COMM=-").replace("PID=1", "PID=0") + "No Socket")
    assert (named.pid, named.comm, none.pid, none.comm) == (7, b"", 0, b"")
