"""The report's output: a ByHost's reports as text (text.py) or one JSON document, written as it is made
(the lifecycles are not held twice, as dicts and as text)."""

import json

from ...logformat.base import Clock
from ...logformat.jsonline import JsonFormatter
from ...logformat.text import TextFormatter
from .bounds import MAX_COMM, MAX_NAME
from .files import MAX_LINE
from .text import text_lines


def write(out, by_host, top, lifecycles, as_json):
    """The report to out: JSON (times in RFC 3339 UTC, as the monitor's JSON lines) or text (local time).
    by_host: aggregate.ByHost. Without hosts (the monitor's own logs) one report, as it always was; with
    them (a central syslog's files) one section per host, then the lines set aside once. lifecycles: how
    many of the most recent connections' lifecycles each report shows (None: all it kept)."""
    clock = Clock()
    clock.offset_ns = 0  # the times here are epoch nanoseconds already
    hosts = by_host.hosts()
    local_only = hosts[0][0] is None and len(hosts) == 1
    if as_json:
        stamp = JsonFormatter(clock).stamp
        if local_only:
            doc = json_document(hosts[0][1], top, lifecycles, stamp)
        else:
            doc = {"hosts": [{"host": host, **json_document(r, top, lifecycles, stamp)} for host, r in hosts],
                   **line_counts(by_host)}
        write_json(out, doc)
        out.write("\n")
        return
    stamp = TextFormatter(clock).stamp
    if lifecycles is None:
        lifecycles = 1 << 62
    if local_only:
        for line in text_lines(hosts[0][1], top, lifecycles, stamp):
            out.write(line + "\n")
        return
    for host, r in hosts:
        out.write(f"Host {host if host is not None else '(lines without a host: the local log)'}\n")
        for line in text_lines(r, top, lifecycles, stamp):
            out.write(f"  {line}\n" if line else "\n")
        out.write("\n")
    named = [h for h, _ in hosts if h is not None]
    lines = by_host.lines
    extra = (f" ({lines.too_long} over {MAX_LINE} bytes)" if lines.too_long else "") + (
        f"; {lines.blank} blank lines" if lines.blank else "") + (
        f"; {by_host.names.cut} names cut (COMM over {MAX_COMM} bytes, others over {MAX_NAME} characters)"
        if by_host.names.cut else "")
    out.write(f"Hosts: {len(named)} ({', '.join(named)}); {by_host.malformed} malformed lines skipped{extra}\n")


def line_counts(by_host):
    """What the reader set aside, for every host at once."""
    return {"malformed": by_host.malformed, "lines_too_long": by_host.lines.too_long,
            "blank_lines": by_host.lines.blank, "names_cut": by_host.names.cut}


def json_document(report, top, lifecycles, stamp):
    """The report as a dict for JSON; stamp: RFC 3339 UTC, as the monitor's JSON lines. Its "connections" (the
    lifecycles) is a Stream: write_json makes each one's dict as it writes it."""
    s = report.summary(top)
    for k in ("first_ns", "last_ns"):
        s[k.replace("_ns", "")] = stamp(s.pop(k)) if s[k] is not None else None
    for table in ("top_connections_by_bytes", "slowest_handshakes"):
        for c in s.get("connection_summaries", {}).get(table, ()):
            c["end"] = stamp(c.pop("end_ns"))
    for row in s["distributions"]["connections_per_minute"]:
        row["minute"] = stamp(row.pop("minute_ns"))
    if report.malformed is not None:  # the local log's report: the reader's counts are its own
        s.update({"lines_too_long": report.too_long, "blank_lines": report.blank,
                  "names_cut": report.shared.names.cut})
    if lifecycles != 0:
        life = report.lifecycles
        shown = life.recent(len(life) if lifecycles is None else lifecycles)
        s["connections"] = Stream(_connection(c, stamp, report.outcomes.get(c)) for c in shown)
        s["connections_not_kept"] = life.left_out
        s["connections_not_shown"] = len(life) - len(shown)
    return s


class Stream:
    """A JSON array whose items are made as they are written."""

    def __init__(self, items):
        self.items = items

    def __iter__(self):
        return iter(self.items)


def write_json(out, obj, level=0):
    """json.dump(obj, out, indent=2), byte for byte, but a Stream's items are made one at a time."""
    pad = "  " * (level + 1)
    if isinstance(obj, dict) and _holds_stream(obj):
        sep = "{\n"
        for k, v in obj.items():
            out.write(f"{sep}{pad}{json.dumps(str(k))}: ")
            write_json(out, v, level + 1)
            sep = ",\n"
        out.write("\n" + "  " * level + "}")
    elif isinstance(obj, Stream) or isinstance(obj, list) and _holds_stream(obj):
        sep, stream = "[", isinstance(obj, Stream)  # a Stream's items hold none
        for v in obj:
            out.write(f"{sep}\n{pad}")
            if stream:
                out.write(json.dumps(v, indent=2).replace("\n", "\n" + pad))
            else:
                write_json(out, v, level + 1)
            sep = ","
        out.write("[]" if sep == "[" else "\n" + "  " * level + "]")
    else:
        out.write(json.dumps(obj, indent=2).replace("\n", "\n" + "  " * level))


def _holds_stream(obj, depth=3):
    """True if obj is a Stream or holds one (a document, or the hosts' list of them), depth levels down."""
    if isinstance(obj, Stream):
        return True
    if not depth or not isinstance(obj, (dict, list)):
        return False
    return any(_holds_stream(v, depth - 1) for v in (obj.values() if isinstance(obj, dict) else obj))


def _connection(c, stamp, outcome=None):
    """A lifecycle's Connection as a dict for --json; outcome: its Summary, if a summary line joined it."""
    d = c.describe()
    more = {} if outcome is None else {
        "result": outcome.result, "bytes_sent": outcome.sent, "bytes_received": outcome.received,
        "duration_ms": None if outcome.duration_us is None else round(outcome.duration_us / 1000, 3)}
    return {
        "src": d["src"], "dst": d["dst"], "pid": d["pid"], "comm": d["comm"], "first": stamp(d["first_ns"]),
        "duration_s": round((d["last_ns"] - d["first_ns"]) / 1e9, 3), "retransmits": d["retransmits"],
        "steps": [{"time": stamp(ts), "what": what} for ts, what in d["steps"]],
        "steps_not_kept": d["steps_not_kept"], **more,
    }
