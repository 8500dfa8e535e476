"""--syslog relp://HOST:PORT: the syslog messages over RELP, rsyslog's Reliable Event Logging Protocol, for
delivery confirmed by the collector itself (rsyslog's imrelp, from Debian's rsyslog-relp).

A RELP frame is `TXNR SP COMMAND SP DATALEN [SP DATA] LF`. The session opens with `open` (our offers:
relp_version=0, relp_software, commands=syslog), answered `rsp` `200 OK` (with the collector's offers);
each message is a `syslog` command whose DATA is the RFC 5424 message, answered `rsp 200 OK` once the
collector has taken it; `close` ends the session. Messages stay in a window (by transaction number)
until their `rsp` comes: a message is delivered only then. After a reconnect the ones not acknowledged
are sent again (with new numbers: a few may arrive twice, counted as sent again); at exit the ones never
acknowledged are counted as dropped. A collector that answers anything but 200 for a message: said once,
and that message counted as dropped.
"""

import socket
import time

from .. import __version__
from .stream import CHUNK
from .syslog import SyslogSink

WINDOW = 1024  # messages sent and not yet acknowledged, at most
FRAME_MAX = 1 << 16  # a frame from the collector larger than this is a protocol error
TXNR_MAX = 999_999_999  # then back to 1
OFFERS = f"relp_version=0\nrelp_software=socket-snoop,{__version__}\ncommands=syslog".encode()


class RelpError(ConnectionError):
    """The collector broke the protocol, or refused the session."""


def frame(txnr, command, data=b""):
    return b"%d %s %d%s\n" % (txnr, command, len(data), b" " + data if data else b"")


def _header(buf, pos):
    """(txnr, command, datalen, where DATA starts) of the frame at pos; None if incomplete."""
    p1 = buf.find(b" ", pos, pos + 11)
    p2 = buf.find(b" ", p1 + 1, p1 + 34) if p1 > pos else -1
    if p2 < 0:
        if len(buf) - pos > 44:
            raise RelpError(f"a malformed frame from the collector: {bytes(buf[pos:pos + 40])!r}")
        return None
    j = p2 + 1
    while j < len(buf) and j - p2 <= 10 and 48 <= buf[j] <= 57:
        j += 1
    if j == len(buf):
        return None
    txnr, datalen = buf[pos:p1], buf[p2 + 1:j]
    if not txnr.isdigit() or not datalen or buf[j] not in b" \n" or int(datalen) > FRAME_MAX:
        raise RelpError(f"a malformed frame from the collector: {bytes(buf[pos:pos + 40])!r}")
    return int(txnr), bytes(buf[p1 + 1:p2]), int(datalen), (j + 1 if buf[j] == 32 else j)


def parse_frames(buf):
    """(complete frames as (txnr, command, data), the bytes left over). Raises RelpError on a malformed frame."""
    out, pos = [], 0
    while pos < len(buf):
        head = _header(buf, pos)
        if head is None:
            break
        txnr, command, datalen, start = head
        end = start + datalen
        if len(buf) < end + 1:
            break
        if buf[end] != 10:
            raise RelpError("a frame from the collector does not end where its length says")
        out.append((txnr, command, bytes(buf[start:end])))
        pos = end + 1
    return out, buf[pos:]


class RelpSink(SyslogSink):
    name = "syslog"
    window = WINDOW

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.txnr = 1
        self.unacked = {}  # txnr -> message (its RFC 5424 bytes), in the order sent
        self.inbuf = b""
        self.refused = 0  # messages the collector answered with an error

    # -- the session -------------------------------------------------------------------------------------
    def connect(self):
        s = socket.create_connection((self.url.host, self.url.port), timeout=10)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            self.inbuf = b""
            s.sendall(frame(1, b"open", OFFERS))
            txnr, command, data = self._answer(s, time.monotonic() + 10)
            if (txnr, command) != (1, b"rsp") or not data.startswith(b"200"):
                raise RelpError(f"the collector refused the RELP session: {data[:80]!r}")
            self.txnr = 2
            s.settimeout(30)
        except BaseException:
            s.close()
            raise
        return s

    def _answer(self, s, deadline):
        """The collector's next frame, waiting for it until deadline."""
        buf = b""
        while True:
            frames, buf = parse_frames(buf)
            if frames:
                self.inbuf = buf
                return frames[0]
            s.settimeout(max(deadline - time.monotonic(), 0.001))
            data = s.recv(65536)
            if not data:
                raise RelpError("the collector closed the session")
            buf += data

    def deliver(self, payloads):
        return self.send_stream([data for data, _ in payloads])

    # -- the window --------------------------------------------------------------------------------------
    def hold(self, chunk):
        out = []
        for msg in chunk:
            txnr = self.txnr
            self.txnr = txnr + 1 if txnr < TXNR_MAX else 1
            self.unacked[txnr] = msg
            out.append(frame(txnr, b"syslog", msg))
        self.inflight_n = len(self.unacked)
        return b"".join(out)

    def take_inflight(self):
        msgs = list(self.unacked.values())
        self.forget_inflight()
        return msgs

    def forget_inflight(self):
        self.unacked.clear()
        self.inflight_n = 0

    def confirm(self, outq):
        """RELP confirms by its own acknowledgements (received()), not by TCP's."""

    def received(self, data):
        frames, self.inbuf = parse_frames(self.inbuf + data)
        acked = 0
        for txnr, command, body in frames:
            if command == b"serverclose":
                raise RelpError("the collector is closing the session")
            if command != b"rsp" or txnr not in self.unacked:
                continue
            del self.unacked[txnr]
            if body.startswith(b"200"):
                acked += 1
            else:
                self.refused += 1
                with self.cond:
                    self.lost += 1
                self.say(f"socket-snoop: syslog {self.url}: the collector refused a message: "
                         f"{body[:80].decode('ascii', 'backslashreplace')}")
        self.inflight_n = len(self.unacked)
        if acked:
            self.recovered()

    def wait_confirmations(self):
        """Wait for the collector's answers on the socket itself (not a timer: they come within ms)."""
        if self.sock is None:
            return super().wait_confirmations()
        self.sock.settimeout(0.05)
        try:
            data = self.sock.recv(65536)
        except (TimeoutError, BlockingIOError):
            return None
        except OSError:
            data = b""
        finally:
            if self.sock is not None:
                self.sock.settimeout(30)
        if not data:
            return self.broke("the collector closed the connection")
        try:
            self.received(data)
        except RelpError as e:
            self.broke(str(e))
        return None

    def finish(self):
        """Stopping: the answers for what is in the window, then `close`; what stays unacknowledged is dropped."""
        lost = super().finish()
        if self.sock is not None and not lost:
            try:
                self.sock.sendall(frame(self.txnr, b"close"))
                self._answer(self.sock, time.monotonic() + 0.5)
            except (OSError, RelpError):
                pass
        return lost

    def details(self):
        return super().details() + f" refused={self.refused}" * bool(self.refused)


def syslog_sink(clock, lines_are_text, url, **kw):
    """The output for a --syslog URL: RELP's for relp://, else SyslogSink (udp, tcp, tls)."""
    cls = RelpSink if getattr(url, "scheme", None) == "relp" else SyslogSink
    return cls(clock, lines_are_text, url, **kw)


assert CHUNK <= WINDOW
