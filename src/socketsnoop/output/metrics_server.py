"""The metrics endpoint's HTTP server: one thread, one selector, a bounded number of connections.

Any local user can connect to the endpoint, so what it may cost the monitor is bounded whatever clients
do: at most `max_connections` descriptors (at the cap, a new connection takes the place of the oldest one
that has not sent its request yet), each connection `idle_s` seconds to send its request and take the
answer (then it is closed: no slowloris), a request of at most REQUEST_MAX bytes, one request per
connection (`Connection: close`). No thread per connection, and no busy loop: when accept() finds no
descriptor left (EMFILE), the listener rests for PAUSE_S before it is tried again, and the pending
connections wait in the kernel's backlog.

The exposition itself is rendered by a callable the metrics sink gives (prometheus_client's
generate_latest), in this thread, only when scraped.
"""

import errno
import selectors
import socket
import threading
import time

MAX_CONNECTIONS = 32
IDLE_S = 5.0
REQUEST_MAX = 8192
PAUSE_S = 0.5
ACCEPTS_PER_WAKE = 64  # then the connections already accepted get their turn
_OUT_OF_FDS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
_STATUS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
           431: "Request Header Fields Too Large", 500: "Internal Server Error"}


class _Conn:
    __slots__ = ("sock", "deadline", "request", "answer")

    def __init__(self, sock, deadline):
        self.sock, self.deadline, self.request, self.answer = sock, deadline, b"", None


def _response(status, body=b"", content_type="text/plain; charset=utf-8", head_only=False):
    head = (f"HTTP/1.1 {status} {_STATUS[status]}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    return head if head_only else head + body


class MetricsServer:
    """Serves render() -> (body bytes, content type) at /metrics (and /) over HTTP/1.x."""

    def __init__(self, addr, port, render, max_connections=MAX_CONNECTIONS, idle_s=IDLE_S):
        self.render = render
        self.max_connections, self.idle_s = max_connections, idle_s
        family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        self.listener = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.listener.bind((addr, port))
            self.listener.listen(128)
            self.listener.setblocking(False)
        except BaseException:
            self.listener.close()
            raise
        self.port = self.listener.getsockname()[1]
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ, None)
        self.wake_r, self.wake_w = socket.socketpair()
        self.selector.register(self.wake_r, selectors.EVENT_READ, "wake")
        self.conns = {}  # socket -> _Conn, oldest first
        self.paused_until = None  # the listener rests (accept ran out of descriptors) until then
        self.served = self.evicted = self.expired = 0
        self.thread = threading.Thread(target=self._run, name="socket-snoop metrics", daemon=True)

    def start(self):
        self.thread.start()
        return self

    def close(self):
        try:
            self.wake_w.send(b"x")
        except OSError:
            pass
        self.thread.join(5)
        for conn in list(self.conns.values()):
            self._drop(conn)
        self.selector.close()
        for s in (self.listener, self.wake_r, self.wake_w):
            s.close()

    # -- the loop ----------------------------------------------------------------------------------------
    def _run(self):
        while True:
            for key, events in self.selector.select(self._timeout()):
                if key.data == "wake":
                    return
                if key.data is None:
                    self._accept()
                    continue
                try:
                    if events & selectors.EVENT_READ:
                        self._read(key.data)
                    else:
                        self._write(key.data)
                except Exception:  # a bug costs that one connection, never the endpoint
                    self._drop(key.data)
            self._expire()

    def _timeout(self):
        now = time.monotonic()
        deadlines = [c.deadline for c in self.conns.values()][:1]  # the oldest's is the earliest
        if self.paused_until is not None:
            deadlines.append(self.paused_until)
        return max(min(deadlines) - now, 0) if deadlines else None

    def _expire(self):
        now = time.monotonic()
        while self.conns:
            conn = next(iter(self.conns.values()))
            if conn.deadline > now:
                break
            self.expired += 1
            self._drop(conn)
        if self.paused_until is not None and now >= self.paused_until:
            self.paused_until = None
            self.selector.register(self.listener, selectors.EVENT_READ, None)

    def _accept(self):
        for _ in range(ACCEPTS_PER_WAKE):
            try:
                sock, _addr = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in _OUT_OF_FDS:  # rest, rather than spin on a listener that stays readable
                    self.selector.unregister(self.listener)
                    self.paused_until = time.monotonic() + PAUSE_S
                    return
                continue  # ECONNABORTED and the like: that one connection
            if len(self.conns) >= self.max_connections:  # the oldest still without a request makes room
                self.evicted += 1
                conns = self.conns.values()
                self._drop(next((c for c in conns if c.answer is None), next(iter(conns))))
            sock.setblocking(False)
            conn = self.conns[sock] = _Conn(sock, time.monotonic() + self.idle_s)
            self.selector.register(sock, selectors.EVENT_READ, conn)

    def _drop(self, conn):
        self.conns.pop(conn.sock, None)
        try:
            self.selector.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.sock.close()

    # -- one connection ---------------------------------------------------------------------------------
    def _read(self, conn):
        try:
            data = conn.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(conn)
            return
        conn.request += data
        end = conn.request.find(b"\r\n\r\n")
        if end < 0 and len(conn.request) <= REQUEST_MAX:
            return
        conn.answer = self._answer(conn.request[:end] if 0 <= end <= REQUEST_MAX else None)
        self.selector.modify(conn.sock, selectors.EVENT_WRITE, conn)
        self._write(conn)

    def _answer(self, head):
        """The response to a request's head (None: too large)."""
        if head is None:
            return _response(431, b"request too large\n")
        parts = head.split(b"\r\n", 1)[0].split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            return _response(400, b"bad request\n")
        method, target = parts[0], parts[1].split(b"?", 1)[0]
        if method not in (b"GET", b"HEAD"):
            return _response(405, b"GET or HEAD only\n")
        if target not in (b"/metrics", b"/"):
            return _response(404, b"not found: the metrics are at /metrics\n")
        try:
            body, content_type = self.render()
        except Exception as e:  # a bug in a collector: the scrape says so, the monitor goes on
            return _response(500, f"{type(e).__name__}: {e}\n".encode("utf-8", "backslashreplace"))
        self.served += 1
        return _response(200, body, content_type, head_only=method == b"HEAD")

    def _write(self, conn):
        try:
            n = conn.sock.send(conn.answer)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(conn)
            return
        conn.answer = conn.answer[n:]
        if not conn.answer:
            try:
                conn.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            self._drop(conn)
