"""--journal: each event to the systemd journal, over its native protocol, with the standard library only.

The protocol (systemd's "Native Journal Protocol"): one datagram per entry on the AF_UNIX socket
/run/systemd/journal/socket, made of fields. A field is `NAME=value\\n`, or, for a value that holds a
newline (or any byte at all), `NAME\\n` + its length as 64-bit little-endian + the value + `\\n`. Every
value that comes from outside (COMM) goes in the binary form when it holds a newline, so a process name
such as "a\\nSOCKETSNOOP_RESULT=x" is one value and never a field of its own; names are ours, fixed. An
entry too large for a datagram goes in a sealed memfd whose descriptor is sent instead (SCM_RIGHTS).

Fields: MESSAGE (the text log line), PRIORITY (4 warning: resets, failed connections, lost events;
6 info), SYSLOG_IDENTIFIER=socket-snoop, MESSAGE_ID (one fixed 128-bit id per event kind: MESSAGE_IDS),
and SOCKETSNOOP_<KEY> for each key of the JSON line (SOCKETSNOOP_SRC, SOCKETSNOOP_DPORT,
SOCKETSNOOP_COMM, ...); a null value is left out.
"""

import array
import errno
import fcntl
import json
import os
import re
import socket

from ..logformat.fields import FieldsEncoder
from ..logformat.words import EVENT_NAMES
from .queued import BACKOFF_S, EVENTS, QueuedSink, severity

DEFAULT_SOCKET = "/run/systemd/journal/socket"
_NOT_NAME = re.compile(r"[^A-Z0-9_]")
# what a datagram too big for the socket says (the journal gone says ENOENT or ECONNREFUSED: wait for it)
_TOO_BIG = (errno.EMSGSIZE, errno.ENOBUFS)
# MESSAGE_ID per event kind (the JSON "event" key): fixed for good, as journalctl's catalog and
# `journalctl MESSAGE_ID=...` rely on; a new kind gets a new random id, an id is never reused
MESSAGE_IDS = {
    "state_change": "376b1841519b47aba8cf036d607f6268",
    "retransmit": "ec8bf9c4cdee4e5c9f3ad567c8c63311",
    "reset_sent": "b6510ac867734b3885009c338dbe045e",
    "reset_received": "5f34c9065645486d8c318bcf53ed983c",
    "connection": "1bce853c9a644386be667cae04220c0c",
    "lost_events": "853d88cec31d42f69451e45777cd3f1f",
    "warning": "e91730db7e904c2f8baa181912d7e5e2",
}
SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL


def entry_head(severity, kind) -> bytes:
    """The fields after MESSAGE that depend only on the severity and the event kind."""
    msgid = MESSAGE_IDS.get(kind)
    return (b"\nPRIORITY=%d\nSYSLOG_IDENTIFIER=socket-snoop\n" % severity
            + (b"MESSAGE_ID=%s\n" % msgid.encode() if msgid else b""))


def field_name(key):
    """SOCKETSNOOP_ + the JSON key, upper-cased (anything but A-Z, 0-9, _ as _): names are ours, never data."""
    return "SOCKETSNOOP_" + _NOT_NAME.sub("_", str(key).upper())


def field(name: bytes, value) -> bytes:
    """One field: NAME=value, or the binary form where the value holds a newline."""
    if value is True or value is False:
        value = b"true" if value else b"false"  # as JSON says it
    elif not isinstance(value, bytes):
        value = str(value).encode("utf-8", "backslashreplace")
    if b"\n" in value:
        return name + b"\n" + len(value).to_bytes(8, "little") + value + b"\n"
    return name + b"=" + value + b"\n"


class JournalSink(QueuedSink):
    name = "journal"

    def __init__(self, clock, lines_are_text, path=DEFAULT_SOCKET, capacity=10000, warn=None, json_lines=False,
                 identity=None):
        super().__init__(clock, lines_are_text, capacity, warn, json_lines, identity)
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.names = {}  # JSON key -> field name bytes
        self.cache = {}  # (key, value) -> encoded field
        self.encoder = FieldsEncoder(clock, self._pair)
        self.heads = {}  # (severity, kind) -> entry_head()
        self.type_heads = {t: entry_head(severity({"event": name}), name) for t, name in EVENT_NAMES.items()}
        self.down = False  # the journal could not be reached (said once until it works again)
        self.large = 0  # entries sent through a memfd

    def encode(self, m) -> bytes:
        """The entry's datagram. Each (key, value) field is encoded once and remembered (most repeat from
        event to event: names, states, addresses, the owner), in a bounded cache."""
        get = self.cache.get
        head = self.heads.get((m.severity, m.kind))
        if head is None:
            head = self.heads[(m.severity, m.kind)] = entry_head(m.severity, m.kind)
        parts = [field(b"MESSAGE", m.text)[:-1], head]  # (a newline only in the binary form)
        for kv in m.fields.items():
            try:
                b = get(kv)
            except TypeError:  # an unhashable value (a list): not cached
                b = None
            parts.append(self._field(kv) if b is None else b)
        return b"".join(parts)

    def _pair(self, key, value):
        if value is None:
            return b""
        name = self.names.get(key)
        if name is None:
            name = self.names[key] = field_name(key).encode()
        return field(name, value)

    def payloads(self, kind, items, lines):
        """Events: their entries from the rows, each piece encoded once (FieldsEncoder); the same bytes as
        encode() of their Messages (tests/daemons/test_outputs_queued.py checks it)."""
        if kind != EVENTS or self.json_lines:  # --json: the JSON line's keys, the owner's names included
            return super().payloads(kind, items, lines)
        heads = self.type_heads
        return [b"".join((field(b"MESSAGE", t[:-1])[:-1], heads[typ], body))
                for t, (typ, _ts, body) in zip(self.texts(items, lines), self.encoder.encode(items))]

    def _field(self, kv):
        key, value = kv
        name = self.names.get(key)
        if name is None:
            name = self.names[key] = field_name(key).encode()
        if value is not None and not isinstance(value, (str, bytes, int)):  # a list (a record's states), a float
            value = json.dumps(value, separators=(",", ":"))
        return self.remember(kv, b"" if value is None else field(name, value))

    def _send_memfd(self, data):
        """The protocol's rule for an entry too large for a datagram: a sealed memfd, sent as the only
        content of an empty datagram."""
        fd = os.memfd_create("socket-snoop-journal", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.write(fd, data)
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, SEALS)
            rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]).tobytes())]
            self.sock.sendmsg([], rights, 0, self.path)
            self.large += 1
        finally:
            os.close(fd)

    def _send(self, data):
        try:
            self.sock.sendto(data, self.path)
        except OSError as e:
            if e.errno not in _TOO_BIG:
                raise
            self._send_memfd(data)

    def started(self):
        if not os.path.exists(self.path):
            self.down = True
            self.warn(f"socket-snoop: no journal at {self.path} (yet): events wait in a queue (what it cannot "
                      "hold is dropped and counted)")

    def deliver(self, entries):
        delay = BACKOFF_S[0]
        i = 0
        while i < len(entries):
            try:
                self._send(entries[i])
            except OSError as e:
                if not self.down:
                    self.down = True
                    self.warn(f"socket-snoop: cannot write to the journal at {self.path}: {e.strerror or e}; "
                              "events wait in a queue (what it cannot hold is dropped and counted)")
                if self.closing:
                    return len(entries) - i
                delay = self.wait_retry(delay)
                continue
            if self.down:
                self.down = False
                self.warn(f"socket-snoop: writing to the journal at {self.path}")
                delay = BACKOFF_S[0]
            i += 1
            self.progress = i
        return 0

    def close(self):
        super().close()
        self.sock.close()
