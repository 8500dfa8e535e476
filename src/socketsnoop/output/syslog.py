"""--syslog URL: RFC 5424 messages to a remote collector, with the standard library only.

    <PRI>1 TIMESTAMP HOSTNAME socket-snoop PROCID MSGID [socketsnoop@32473 src="..." ...] MSG

PRI is facility * 8 + severity (4 warning: resets, failed connections, lost events; 6 info); TIMESTAMP
the event's (RFC 3339, UTC, milliseconds); MSGID the event kind (state_change, retransmit, ...); the
structured data element carries every key of the JSON line as a parameter, its value escaped as
RFC 5424 6.3.3 says (`"`, `\\` and `]` behind a backslash); MSG is the text log line, which is
printable ASCII already (COMM escaped), so no BOM.

Transports: udp:// one message per datagram, cut to UDP_MAX bytes if larger (counted); tcp:// and
tls:// (stdlib ssl, the peer's certificate and host name verified against --syslog-ca or the system's
CAs) with RFC 6587 octet-counting framing (`LEN SP MSG`), so no byte of a message can end it early.
The stream's delivery (output/stream.py): reconnecting with a backoff that grows while connections keep
failing, and a message counted as delivered only once confirmed (the collector's TCP acknowledged it and
the connection stayed up); what was in flight when a stream broke is sent again (a few may arrive twice,
counted as sent again), what cannot be confirmed at exit is counted as dropped.
"""

import errno
import json
import os
import socket
import ssl
import urllib.parse

from ..logformat.fields import FieldsEncoder
from ..logformat.words import EVENT_NAMES
from .queued import EVENTS, severity
from .stream import StreamSink

ENTERPRISE_ID = "socketsnoop@32473"  # 32473: the private enterprise number RFC 5612 sets aside for examples
SD_ID = ENTERPRISE_ID.encode()
APP_NAME = "socket-snoop"
UDP_MAX = 2048  # RFC 5426: receivers SHOULD take 2048 octets; larger datagrams may be cut or refused
DEFAULT_PORTS = {"udp": 514, "tcp": 514, "tls": 6514, "relp": 2514}
FACILITIES = {name: n for n, name in enumerate(
    "kern user mail daemon auth syslog lpr news uucp cron authpriv ftp ntp security console solaris-cron".split())}
FACILITIES.update({f"local{i}": 16 + i for i in range(8)})
# RFC 5424's three escapes, and no control character or line separator raw in a value (a collector that writes
# structured data to a file as it came would take a newline or an ESC from a process's name): \xNN, \u2028
_SD_ESCAPE = str.maketrans({"\\": "\\\\", '"': '\\"', "]": "\\]",
                            **{chr(c): f"\\x{c:02x}" for c in (*range(0x20), *range(0x7f, 0xa0))},
                            "\u2028": "\\u2028", "\u2029": "\\u2029"})


class SyslogURL:
    def __init__(self, text):
        self.text = text
        u = urllib.parse.urlsplit(text)
        if u.scheme not in DEFAULT_PORTS or not u.hostname or u.path not in ("", "/") or u.query:
            raise ValueError("expected udp://HOST:PORT, tcp://HOST:PORT, tls://HOST:PORT or relp://HOST:PORT")
        try:
            port = u.port
        except ValueError:
            raise ValueError("the port is a number from 1 to 65535") from None
        self.scheme, self.host, self.port = u.scheme, u.hostname, port or DEFAULT_PORTS[u.scheme]

    def __str__(self):
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def parse_url(text):
    return SyslogURL(str(text))


def sd_value(value):
    if value is None:
        return ""
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, (list, dict)):  # as JSON has it (a record's states)
        value = json.dumps(value, separators=(",", ":"))
    return str(value).translate(_SD_ESCAPE)


def _hostname():
    """RFC 5424 HOSTNAME: printable ASCII without spaces, at most 255 characters, else '-'."""
    name = socket.gethostname()  # as configured (no DNS look-up: it could hold up the start)
    ok = name and len(name) <= 255 and all(33 <= ord(c) <= 126 for c in name)
    return name if ok else "-"


class SyslogSink(StreamSink):
    name = "syslog"

    def __init__(self, clock, lines_are_text, url, facility="daemon", ca=None, capacity=10000, warn=None,
                 json_lines=False, identity=None):
        super().__init__(clock, lines_are_text, capacity, warn, json_lines, identity)
        self.url = url if isinstance(url, SyslogURL) else parse_url(url)
        self.facility = FACILITIES[facility]
        self.header_tail = f" {_hostname()} {APP_NAME} {os.getpid()} ".encode()
        self.heads = {}  # (severity, kind) -> the header's bytes before and after the timestamp
        self.cache = {}  # (key, value) -> its SD-PARAM bytes
        self.encoder = FieldsEncoder(clock, self._pair, b" ", with_timestamp=False)
        self.type_heads = {t: self._head(severity({"event": name}), name) for t, name in EVENT_NAMES.items()}
        self.truncated = 0
        self.context = None
        if self.url.scheme == "tls":
            self.context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)  # verifies by default
            self.context.minimum_version = ssl.TLSVersion.TLSv1_2

    # -- the message --------------------------------------------------------------------------------
    def encode(self, m) -> bytes:
        """The RFC 5424 message. Each key="value" parameter is made once and remembered (most repeat from
        event to event), in a bounded cache."""
        f = m.fields
        get = self.cache.get
        sd = []
        for kv in f.items():
            try:
                b = get(kv)
            except TypeError:  # an unhashable value (a list): not cached
                b = None
            if b is None:
                b = self._param(kv)
            if b:
                sd.append(b)
        head = self.heads.get((m.severity, m.kind)) or self._head(m.severity, m.kind)
        return b"".join((head[0], (f.get("timestamp") or "-").encode(), head[1], b" ".join(sd), b"] ",
                         m.text.encode("ascii", "backslashreplace")))

    def _head(self, severity, kind):
        msgid = kind if kind.isascii() and kind.isprintable() and " " not in kind and kind else "-"
        head = self.heads[(severity, kind)] = (b"<%d>1 " % (self.facility * 8 + severity),
                                               self.header_tail + msgid[:32].encode() + b" [" + SD_ID + b" ")
        return head

    def _pair(self, key, value):
        return b"" if value is None else f'{key}="{sd_value(value)}"'.encode("utf-8", "backslashreplace")

    def payloads(self, kind, items, lines):
        """(message, length of its MSG) per event; events' from their rows, each piece encoded once
        (FieldsEncoder): the same bytes as encode() of their Messages (tests/daemons/test_outputs_queued.py checks it)."""
        if kind != EVENTS or self.json_lines:  # --json: the JSON line's keys, the owner's names included
            return [(self.encode(m), len(m.text)) for m in self._messages(kind, items, lines)]
        heads, out = self.type_heads, []
        for t, (typ, ts, body) in zip(self.texts(items, lines), self.encoder.encode(items)):
            msg = t[:-1].encode("ascii", "backslashreplace")
            head = heads[typ]
            out.append((b"".join((head[0], ts.encode(), head[1], body, b"] ", msg)), len(msg)))
        return out

    def _param(self, kv):
        key, value = kv
        return self.remember(kv, b"" if value is None or key == "timestamp" else
                             f'{key}="{sd_value(value)}"'.encode("utf-8", "backslashreplace"))

    def _fit(self, data, msg_len):
        """A datagram of at most UDP_MAX bytes: the MSG cut first, then the structured data left out (never
        cut inside it, which would make it unparsable)."""
        if len(data) <= UDP_MAX:
            return data
        self.truncated += 1
        head_sd = data[:len(data) - msg_len]
        if len(head_sd) < UDP_MAX:
            return data[:UDP_MAX]
        head = data[:data.index(b" [" + SD_ID)]
        return (head + b" - " + data[len(data) - msg_len:])[:UDP_MAX]

    # -- the transport -------------------------------------------------------------------------------
    def connect(self):
        u = self.url
        if u.scheme == "udp":
            infos = socket.getaddrinfo(u.host, u.port, type=socket.SOCK_DGRAM)
            family, kind, proto, _, addr = infos[0]
            s = socket.socket(family, kind | socket.SOCK_CLOEXEC, proto)
            s.connect(addr)
            return s
        s = socket.create_connection((u.host, u.port), timeout=10)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            if self.context is not None:
                s = self.context.wrap_socket(s, server_hostname=u.host)
            s.settimeout(30)
        except BaseException:
            s.close()
            raise
        return s

    def deliver(self, payloads):
        if self.url.scheme != "udp":
            return self.send_stream([b"%d %s" % (len(d), d) for d, _ in payloads])
        fit = self._fit
        return self._send_udp([fit(data, n) for data, n in payloads])

    def started(self):
        if self.url.scheme != "udp":
            super().started()

    def _send_udp(self, frames):
        lost = 0
        for data in frames:
            try:
                if self.sock is None:
                    self.sock = self.connect()
                self.sock.send(data)
                self.progress += 1
                self.problem = None
                self.said.clear()
            except OSError as e:  # ECONNREFUSED: an ICMP port unreachable for an earlier datagram
                lost += 1
                self.say(f"socket-snoop: syslog {self.url}: {e.strerror or e} (UDP: lost messages are counted "
                         "where the kernel reports them)")
                if e.errno not in (errno.ECONNREFUSED,):
                    self.disconnect()
        return lost

    def idle(self):
        if self.url.scheme != "udp":
            super().idle()

    def details(self):
        return f" truncated={self.truncated}" * bool(self.truncated) + super().details()
