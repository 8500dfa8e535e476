"""The warning line (pipeline/health's HealthWarning), in both formats and as fields:

  Dec 06 2026 18:02:11.020 Warning: close-wait-leak status=active PID=4242 COMM=server UID=0 sockets=3 growth=1 oldest_s=61 threshold_s=60 seen=1 -- 3 sockets in CLOSE_WAIT for more than 60 s: ...
  {"timestamp":"...","event":"warning","kind":"close-wait-leak","status":"active","pid":4242,"comm":"server","uid":0,...,"sockets":3,...,"message":"..."}

The owner's names (USER=, UNIT=, CONTAINER=, ... in text; "user", "unit", ... in JSON) follow UID where the
formatter has an identity (JSON, --context). A warning about no process (a port scan) has no PID, COMM, UID.
Values from outside (COMM, the names, the processes' names) are escaped as in every other line (escape.py);
the rest (numbers, addresses, the words) are ours. reader.py reads the lines back (LoggedWarning)."""

import json

from ..pipeline.identity import owner_key
from .base import Clock
from .escape import comm_text, escape_comm, escape_token
from .jsonline import JsonFormatter

WARNING_TITLE = "Warning"  # the text line's title
WARNING_NAME = "warning"  # JSON "event", syslog's MSGID
WORDS_SEP = " -- "  # between the key=value pairs and the words


# in the list of processes 'comm(pid)xN,...', a name's own ',', '(' and ')' escaped as escape_comm escapes
# others: a process named 'x(1)x99,sshd' is one entry, not two
_LIST_ESCAPE = str.maketrans({c: f"\\x{ord(c):02x}" for c in ",()"})


def _text_value(value):
    if isinstance(value, tuple):  # the processes: ((pid, raw comm, count), ...)
        return ",".join(f"{escape_comm(comm, pid).translate(_LIST_ESCAPE)}({pid})x{n}" for pid, comm, n in value) or "-"
    if isinstance(value, str):
        return escape_token(value)
    return str(value)


def _json_value(value):
    if isinstance(value, tuple):
        return [{"pid": pid, "comm": comm_text(comm), "count": n} for pid, comm, n in value]
    return value


class WarningLines:
    """Lines and fields of Warnings, for a line formatter (text or JSON: whose clock and owner's names they use)."""

    def __init__(self, formatter):
        self.formatter = formatter
        self.json = isinstance(formatter, JsonFormatter)
        # the fields' time is the JSON line's (RFC 3339, UTC), whatever the lines' format: syslog's header takes it
        clock = Clock()
        clock.offset_ns = formatter._offset
        self.json_stamp = formatter.stamp if self.json else JsonFormatter(clock).stamp

    def _names(self, owner):
        """The owner's names as the formatter writes them ('' without an identity)."""
        f = self.formatter
        if owner is None or getattr(f, "identity", None) is None:
            return ""
        text = f._owner(owner_key(owner.cgroup, owner.uid, owner.ident))[0]
        if self.json:  # ',"uid":N,"user":...': the uid is written with the owner already
            return text.replace(f',"uid":{owner.uid}', "", 1)
        return text.rstrip("\n") if f.lines.__name__ == "_lines_context" else ""

    def lines(self, warnings):
        return [self.json_line(w) if self.json else self.text_line(w) for w in warnings]

    def text_line(self, w):
        o = w.owner
        who = f" PID={o.pid} COMM={escape_comm(o.comm, o.pid)} UID={o.uid}{self._names(o)}" if o else ""
        pairs = "".join(f" {k}={_text_value(v)}" for k, v in w.fields)
        return f"{self.formatter.stamp(w.ts_ns)} {WARNING_TITLE}: {w.kind} status={w.status}{who}{pairs}" \
               f"{WORDS_SEP}{w.words}\n"

    def fields(self, w):
        """The JSON line's keys and values, as json.loads of json_line() gives them."""
        o = w.owner
        d = {"timestamp": self.json_stamp(w.ts_ns), "event": WARNING_NAME, "kind": w.kind, "status": w.status}
        if o:
            d.update(pid=o.pid, comm=comm_text(o.comm), uid=o.uid)
            if self.json:
                names = self._names(o)
                if names:
                    d.update(json.loads("{" + names[1:] + "}"))
        d.update((k, _json_value(v)) for k, v in w.fields)
        d["message"] = w.words
        return d

    def notice_fields(self, w):
        """fields() for the journal and syslog: the processes as the text line has them (one flat value, names
        escaped), and SOCKETSNOOP_WARNING=KIND's key."""
        d = self.fields(w)
        for k, v in w.fields:
            if isinstance(v, tuple):
                d[k] = _text_value(v)
        d["warning"] = w.kind
        return d

    def json_line(self, w):
        return json.dumps(self.fields(w), ensure_ascii=True, separators=(",", ":")) + "\n"
