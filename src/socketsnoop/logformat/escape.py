"""Names from outside (a task's COMM, a user, a unit, a cgroup) as the log writes them, and back.

Text lines: a name is one token of printable ASCII: a space, '\\', a control character or any byte that is
not printable ASCII becomes \\xNN (lower-case hex), so no name can forge a line, a field or drive a
terminal. 'COMM=-' is no process (PID=0); a process named '-' is '\\x2d', one named with the empty string
'\\x00' (its name's first byte is NUL: no name can hold a NUL, so no other name prints so).

JSON, journal and syslog values: the name's text, with '\\' written '\\\\' and a byte that is not UTF-8
written '\\xNN', so that a name whose text is '\\xff' and one holding the byte 0xff never print the same.
Addresses are ours (the kernel's bytes), printed as ipaddress does.
"""

import ipaddress
import re

NO_PROCESS = "-"
EMPTY_NAME = r"\x00"
_SAFE = frozenset(range(0x21, 0x7F)) - {ord("\\")}
_ESCAPES = {b: chr(b) if b in _SAFE else f"\\x{b:02x}" for b in range(256)}
_TEXT_ESCAPE = re.compile(r"\\x([0-9a-fA-F]{2})")
_JSON_ESCAPE = re.compile(rb"\\(\\|x[89a-fA-F][0-9a-fA-F])")  # what comm_text makes of '\\' and of a byte not UTF-8


def escape_comm(raw: bytes, pid=0) -> str:
    """A task name as a single safe token; the empty name is no process when pid is 0, else EMPTY_NAME."""
    raw = raw.split(b"\0", 1)[0]
    if not raw:
        return EMPTY_NAME if pid else NO_PROCESS
    if raw == b"-":
        return r"\x2d"  # a process named "-" is not "no process"
    return "".join(_ESCAPES[b] for b in raw)


def escape_token(text: str) -> str:
    """A name from outside (a user, a unit, a cgroup's) as one safe token of a text line, as COMM is ('-' is
    the empty name, '\\x2d' the name '-')."""
    if text == "-":
        return r"\x2d"
    return "".join(_ESCAPES[b] for b in text.encode("utf-8", "surrogateescape")) or "-"


def unescape_comm(text: str) -> bytes:
    """escape_comm reversed: '\\x0a' -> b'\\n'; '-' (no process) and EMPTY_NAME -> b''. Linear in the text."""
    if text == NO_PROCESS or text == EMPTY_NAME:
        return b""
    return _TEXT_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text).encode("latin-1", "surrogateescape") \
        if text.isascii() else _unescape_any(text)


def _unescape_any(text):
    """A token that is not ASCII (not ours, but a reader takes it): its UTF-8, with \\xNN as bytes."""
    out, pos = bytearray(), 0
    for m in _TEXT_ESCAPE.finditer(text):
        out += text[pos:m.start()].encode("utf-8", "surrogateescape")
        out.append(int(m.group(1), 16))
        pos = m.end()
    out += text[pos:].encode("utf-8", "surrogateescape")
    return bytes(out)


def comm_text(raw: bytes) -> str:
    """A task name for JSON, the journal and syslog: its text, '\\' doubled, a byte not UTF-8 as \\xNN."""
    raw = raw.split(b"\0", 1)[0]
    if b"\\" in raw:
        raw = raw.replace(b"\\", b"\\\\")
    return raw.decode("utf-8", "backslashreplace")


def comm_from_json(text: str) -> bytes:
    """comm_text reversed: the raw name. A lone surrogate (a JSON escape we never write) stays visible as
    '\\udNNN'; a '\\' that starts no escape of ours is kept as it is."""
    raw = text.encode("utf-8", "backslashreplace")
    if b"\\" not in raw:
        return raw
    return _JSON_ESCAPE.sub(lambda m: b"\\" if m.group(1) == b"\\" else bytes((int(m.group(1)[1:], 16),)), raw)


def format_addr(family: int, raw: bytes) -> str:
    if family == 4:
        return "%d.%d.%d.%d" % (raw[0], raw[1], raw[2], raw[3])
    return str(ipaddress.IPv6Address(raw[:16]))


def format_endpoint(family: int, addr: str, port: int) -> str:
    """10.0.0.1:80, or [2001:db8::1]:443."""
    if family == 6:
        return f"[{addr}]:{port}"
    return f"{addr}:{port}"
