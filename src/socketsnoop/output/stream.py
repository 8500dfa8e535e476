"""Delivery over a stream to a collector (syslog over tcp:// and tls://, and RELP's base): reconnecting with
backoff, and counting a message as delivered only once the collector can have received it.

A message written to the socket is not delivered yet: it is "in flight" until confirmed. Over plain TCP
or TLS a frame is confirmed when the collector's TCP has acknowledged every byte written (SIOCOUTQ reads 0)
and the connection is still up CONFIRM_S after the frame was written (a collector that accepts and closes at
once, or resets unread data, never confirms anything). A subclass may confirm otherwise (RELP: the
collector's own acknowledgements, confirm()). What was in flight when a connection broke is sent again
first on the next one (counted as sent again); what is in flight when the monitor stops and cannot be
confirmed is counted as dropped, never as delivered.

Backoff: after a connection breaks or cannot be made, the next attempt waits, 0.2 s doubling to 10 s; the
wait goes back to 0.2 s only once a connection has confirmed messages, so a collector that accepts and
then closes every connection gets a few attempts a minute, not thousands. Each distinct problem is said
once on stderr until delivery works again ("delivering again").
"""

import collections
import fcntl
import select
import ssl
import sys
import termios
import time

from .queued import BACKOFF_S, CLOSE_WAIT_S, QueuedSink

CONFIRM_S = 0.2  # a frame's connection must stay up this long after it was written (and TCP acked it)
INFLIGHT_MAX = 50000  # frames in flight at most: past it, the writer waits for confirmations
CHUNK = 256  # frames per write
_POLL_BAD = select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP | getattr(select, "POLLRDHUP", 0x2000)


class StreamSink(QueuedSink):
    """A QueuedSink over a reconnecting stream. Subclasses give connect() (a connected socket, raising
    OSError or ssl.SSLError) and self.url (what they send to, for messages), and call send_stream() with
    each message's bytes."""

    window = INFLIGHT_MAX

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.sock = None
        self.inflight = collections.deque()  # (time written, [frames], sent_bytes after them), oldest first
        self.sent_bytes = 0  # written on this connection
        self.inflight_n = 0
        self.limbo = 0  # frames taken from a broken connection's flight, not written again yet
        self.sent_again = 0
        self.connects = 0
        self.delay = BACKOFF_S[0]  # the wait before the next attempt after a failure
        self.next_try = 0.0
        self.problem = None  # set while delivery does not work
        self.said = set()  # problems said on stderr since delivery last worked

    # -- saying things, once ----------------------------------------------------------------------------
    def say(self, text):
        self.problem = text
        if text not in self.said and len(self.said) < 16:
            self.said.add(text)
            self.warn(text)

    def recovered(self):
        """Messages were confirmed on this connection: delivery works; the backoff starts over."""
        self.delay = BACKOFF_S[0]
        if self.problem:
            self.warn(f"socket-snoop: syslog {self.url}: connected again, delivering")
        self.problem = None
        self.said.clear()

    # -- the connection ----------------------------------------------------------------------------------
    def started(self):
        try:
            self.sock = self.connect()
            self.connects += 1
            self.sent_bytes = 0
        except ssl.SSLCertVerificationError as e:
            self._refused(e)
        except (OSError, ssl.SSLError) as e:
            self._unreachable(e)

    def _refused(self, e):
        self.say(f"socket-snoop: syslog {self.url}: refused the collector: its certificate could not be "
                 f"verified ({e.verify_message}); messages wait in a queue (dropped ones are counted)")
        self.delay = max(self.delay, BACKOFF_S[1] / 2)  # not a passing trouble: retry seldom

    def _unreachable(self, e):
        self.say(f"socket-snoop: syslog {self.url}: cannot connect: {e.strerror or e}; messages wait in a "
                 "queue (dropped ones are counted); reconnecting")

    def _backoff(self):
        self.next_try = time.monotonic() + self.delay
        self.delay = min(self.delay * 2, BACKOFF_S[1])

    def _reconnect(self):
        """Connect, after the backoff's wait; False if the monitor is stopping and the collector is down."""
        while True:
            if self.closing and self.problem:
                return False
            wait = self.next_try - time.monotonic()
            if wait > 0 and not self.closing:
                with self.cond:
                    if not self.closing:
                        self.cond.wait(wait)
                continue
            try:
                self.sock = self.connect()
                self.connects += 1
                self.sent_bytes = 0
                return True
            except ssl.SSLCertVerificationError as e:
                self._refused(e)
            except (OSError, ssl.SSLError) as e:
                self._unreachable(e)
            self._backoff()

    def disconnect(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None

    def broke(self, why):
        self.say(f"socket-snoop: syslog {self.url}: the connection broke ({why}); reconnecting, messages "
                 "wait in a queue")
        self.disconnect()
        self._backoff()

    def alive(self):
        """The stream is still up (and what it confirms is confirmed). A collector sends us nothing but
        its acknowledgements: readable with nothing more means closed."""
        fd = self.sock.fileno()
        try:
            outq = int.from_bytes(fcntl.ioctl(fd, termios.TIOCOUTQ, b"\0\0\0\0"), sys.byteorder)  # SIOCOUTQ
        except OSError:
            return False
        p = select.poll()
        p.register(fd, _POLL_BAD)
        if p.poll(0) and not self.read_input():
            return False
        self.confirm(outq)  # (outq read before the poll: taken while the stream was up)
        return True

    def read_input(self):
        """Something to read: EOF (the collector closed), an error, or TLS's own records (session tickets).
        True if the stream is still up."""
        s = self.sock
        s.setblocking(False)
        try:
            while True:
                data = s.recv(4096)
                if not data:
                    return False
                self.received(data)
        except (ssl.SSLWantReadError, BlockingIOError):
            return True
        except OSError:
            return False
        finally:
            try:
                s.settimeout(30)
            except OSError:
                pass

    def received(self, data):
        """Bytes from the collector (plain syslog: none expected, ignored)."""

    def confirm(self, outq):
        """outq bytes written are not yet acknowledged by the collector's TCP: the chunks before them, written
        at least CONFIRM_S ago on this connection that is still up, are delivered. (Over TLS outq counts
        the records' bytes, more than ours: this errs on the side of not confirming.)"""
        acked, limit, n = self.sent_bytes - outq, time.monotonic() - CONFIRM_S, 0
        while self.inflight and self.inflight[0][0] <= limit and self.inflight[0][2] <= acked:
            n += len(self.inflight.popleft()[1])
        if n:
            self.inflight_n -= n
            self.recovered()

    # -- what is in flight (a subclass may keep it otherwise: RELP, by transaction number) ------------------
    def hold(self, chunk):
        """Keep a chunk of messages as in flight; the bytes to write for them."""
        data = b"".join(chunk)
        self.sent_bytes += len(data)
        self.inflight.append((time.monotonic(), chunk, self.sent_bytes))
        self.inflight_n += len(chunk)
        return data

    def take_inflight(self):
        """The messages in flight on a connection that broke, to be sent again; none left in flight."""
        frames = [f for _, chunk, _ in self.inflight for f in chunk]
        self.forget_inflight()
        return frames

    def forget_inflight(self):
        self.inflight.clear()
        self.inflight_n = 0

    def wait_confirmations(self):
        """A moment for confirmations to come (the writer has nothing else to do)."""
        with self.cond:
            self.cond.wait(CONFIRM_S / 4)

    # -- sending -----------------------------------------------------------------------------------------
    def send_stream(self, frames):
        """Write frames, reconnecting as needed; how many could not be sent (stopping, the collector down)."""
        pending = frames
        while True:
            if self.sock is None:
                if not self._reconnect():
                    return self._give_up(pending)
                if self.inflight_n:  # written before the stream broke, not confirmed: again, first
                    resend = self.take_inflight()
                    self.sent_again += len(resend)
                    self.limbo += len(resend)
                    pending = resend + pending
            if not pending:
                return 0
            if not self.alive():
                self.broke("the collector closed the connection")
                continue
            if self.inflight_n >= self.window:  # wait for confirmations rather than forget frames
                self.wait_confirmations()
                continue
            k = min(CHUNK, self.window - self.inflight_n)
            chunk, pending = pending[:k], pending[k:]
            data = self.hold(chunk)
            self.limbo = max(self.limbo - len(chunk), 0)
            self.progress = min(max(len(frames) - len(pending) + self.limbo, 0), len(frames))  # (out of pending)
            try:
                self.sock.sendall(data)
            except (OSError, ssl.SSLError) as e:  # perhaps partly written: all of it again after reconnecting
                self.broke(e.strerror or str(e))

    def _give_up(self, pending):
        """Stopping with the collector down: what is pending, and what was written but not confirmed."""
        n = len(pending) + self.inflight_n
        self.forget_inflight()
        self.limbo = 0
        return n

    def idle(self):
        if self.sock is not None and not self.alive():
            self.broke("the collector closed the connection")

    def finish(self):
        """Stopping: wait (a little) for what is in flight to be confirmed; the rest is dropped."""
        end = time.monotonic() + CLOSE_WAIT_S * 2 / 3
        while self.inflight_n and time.monotonic() < end:
            if self.sock is not None and self.alive():
                self.wait_confirmations()
                continue
            if self.sock is not None:
                self.broke("the collector closed the connection")
            lost = self.send_stream([])
            if lost:
                return lost
        return self._give_up([])

    def details(self):
        return f" sent_again={self.sent_again}" * bool(self.sent_again)

    def close(self):
        super().close()
        with self.cond:  # a writer abandoned in the middle: what it had in flight is dropped too
            self.lost += self.inflight_n + self.limbo
            self.forget_inflight()
            self.limbo = 0
        self.disconnect()
