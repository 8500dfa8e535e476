"""The report's output: the lifecycles and the summary of a Report, as text lines or one JSON document."""

import json

from ...kernel.abi import EV_RESET_RECEIVED, EV_RESET_SENT
from ...output.formats import Clock, JsonFormatter, TextFormatter
from ...output.tracker import Tracker
from ...pipeline.decode import EVENT_TITLES
from .parse import NAME_KINDS


def write(out, by_host, top, lifecycles, as_json):
    """The report to out: JSON (times in RFC 3339 UTC, as the monitor's JSON lines) or text (local time).
    by_host: aggregate.ByHost. Without hosts (the monitor's own logs) one report, as it always was; with
    them (a central syslog's files) one section per host, then the malformed lines once."""
    clock = Clock()
    clock.offset_ns = 0  # the times here are epoch nanoseconds already
    hosts = by_host.hosts()
    if as_json:
        stamp = JsonFormatter(clock).stamp
        if hosts[0][0] is None and len(hosts) == 1:
            out.write(json_document(hosts[0][1], top, lifecycles, stamp) + "\n")
            return
        doc = {"hosts": [{"host": host, **json.loads(json_document(r, top, lifecycles, stamp))} for host, r in hosts],
               "malformed": by_host.malformed}
        out.write(json.dumps(doc, indent=2) + "\n")
        return
    stamp = TextFormatter(clock).stamp
    if hosts[0][0] is None and len(hosts) == 1:
        out.write("\n".join(text_lines(hosts[0][1], top, lifecycles, stamp)) + "\n")
        return
    lines = []
    for host, r in hosts:
        lines += [f"Host {host if host is not None else '(lines without a host: the local log)'}"]
        lines += ["  " + line if line else "" for line in text_lines(r, top, lifecycles, stamp)]
        lines.append("")
    named = [h for h, _ in hosts if h is not None]
    lines.append(f"Hosts: {len(named)} ({', '.join(named)}); {by_host.malformed} malformed lines skipped")
    out.write("\n".join(lines) + "\n")


def text_lines(report, top, lifecycles, stamp):
    out = []
    if lifecycles:
        out += list(report.tracker.report(stamp))
        out.append("")
    s = report.summary(top)
    span = (f"{stamp(report.first)} to {stamp(report.last)}" if report.first is not None else "no events")
    malformed = f"; {report.malformed} malformed lines skipped" if report.malformed is not None else ""
    out.append(f"Summary: {report.events} events ({span}); {report.filtered} filtered out{malformed}")
    out.append("  by event: " + (", ".join(f"{EVENT_TITLES[NAME_KINDS[k]]} {n}"
                                           for k, n in s["by_event"].items()) or "none"))
    out.append("  states reached: " + (", ".join(f"{k} {n}" for k, n in s["states"].items()) or "none"))
    out.append(f"Processes (top {top}): established, retransmits, resets")
    for p in s["processes"]:
        out.append(f"  PID={p['pid']} COMM={p['comm']}: {p['established']} established, "
                   f"{p['retransmits']} retransmits, {p['resets']} resets")
    out.append(f"Remote endpoints (top {top}): events, established")
    for r in s["remotes"]:
        out.append(f"  {r['remote']}: {r['events']} events, {r['established']} established")
    out.append(f"Resets (top {top}): {report.kinds[EV_RESET_SENT]} sent, "
               f"{report.kinds[EV_RESET_RECEIVED]} received")
    for r in s["resets"]:
        out.append(f"  {EVENT_TITLES[NAME_KINDS[r['event']]]}: {r['local']} <-> {r['remote_addr']} "
                   f"PID={r['pid']} COMM={r['comm']}: {r['count']}")
    out += left_out_lines(report)
    return out


def left_out_lines(report):
    """What the bounded tables let go, in words; [] if nothing."""
    lo = report.left_out
    if not lo:
        return []
    parts = [f"{lo[k]} events not counted in {what}" for k, what in
             (("processes", "Processes"), ("remotes", "Remote endpoints"), ("resets", "Resets")) if lo[k]]
    if parts:
        parts[0] = parts[0] + f" (each table keeps its first {report.table_limit} keys)"
    if lo["joins"]:
        parts.append(f"{lo['joins']} of the oldest unclosed connections forgotten for joining lines "
                     f"(more than {report.join_limit} at once): their later lines start new connections")
    return ["Left out: " + "; ".join(parts)]


def json_document(report, top, lifecycles, stamp):
    """stamp: RFC 3339 UTC, as the monitor's JSON lines."""
    s = report.summary(top)
    for k in ("first_ns", "last_ns"):
        s[k.replace("_ns", "")] = stamp(s.pop(k)) if s[k] is not None else None
    if lifecycles:
        s["connections"] = [_connection(c, stamp) for c in report.tracker.connections()]
        s["connections_not_kept"] = report.tracker.left_out
    return json.dumps(s, indent=2)


def _connection(c, stamp):
    """One of tracker.connections() as a dict for --json."""
    d = Tracker.describe(c)
    return {
        "src": d["src"], "dst": d["dst"], "pid": d["pid"], "comm": d["comm"], "first": stamp(d["first_ns"]),
        "duration_s": round((d["last_ns"] - d["first_ns"]) / 1e9, 3), "retransmits": d["retransmits"],
        "steps": [{"time": stamp(ts), "what": what} for ts, what in d["steps"]],
        "steps_not_kept": d["steps_not_kept"],
    }
