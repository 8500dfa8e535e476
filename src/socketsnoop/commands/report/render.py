"""The report's output: the lifecycles and the summary of a Report, as text lines or one JSON document."""

import json

from ...kernel.abi import EV_RESET_RECEIVED, EV_RESET_SENT
from ...logformat.base import Clock
from ...logformat.jsonline import JsonFormatter
from ...logformat.text import TextFormatter
from ...logformat.words import EVENT_TITLES
from ...output.tracker import Tracker
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
        out += list(report.tracker.report(stamp, lambda c: _outcome_text(report.outcomes.get(c))))
        out.append("")
    s = report.summary(top)
    span = (f"{stamp(report.first)} to {stamp(report.last)}" if report.first is not None else "no events")
    malformed = f"; {report.malformed} malformed lines skipped" if report.malformed is not None else ""
    summaries = f" and {report.records.count} connection summaries" if report.summaries_read else ""
    out.append(f"Summary: {report.events} events{summaries} ({span}); {report.filtered} filtered out{malformed}")
    out.append("  by event: " + (", ".join(f"{EVENT_TITLES[NAME_KINDS[k]]} {n}"
                                           for k, n in s["by_event"].items()) or "none"))
    out.append("  states reached: " + (", ".join(f"{k} {n}" for k, n in s["states"].items()) or "none"))
    if s["warnings"]:
        out.append("  health warnings: " + ", ".join(f"{k} {n}" for k, n in s["warnings"].items()))
    out.append(f"Processes (top {top}): established, retransmits, resets")
    for p in s["processes"]:
        out.append(f"  PID={p['pid']} COMM={p['comm']}: {p['established']} established, "
                   f"{p['retransmits']} retransmits, {p['resets']} resets")
    for table, title in (("units", "Units"), ("containers", "Containers"), ("users", "Users")):
        if s[table]:  # only when the logs carry them (JSON, or text written with --context)
            out.append(f"{title} (top {top}): events, established, retransmits, resets")
            for g in s[table]:
                out.append(f"  {g['name']}: {g['events']} events, {g['established']} established, "
                           f"{g['retransmits']} retransmits, {g['resets']} resets")
    out.append(f"Remote endpoints (top {top}): events, established")
    for r in s["remotes"]:
        out.append(f"  {r['remote']}: {r['events']} events, {r['established']} established")
    out.append(f"Resets (top {top}): {report.kinds[EV_RESET_SENT]} sent, "
               f"{report.kinds[EV_RESET_RECEIVED]} received")
    for r in s["resets"]:
        out.append(f"  {EVENT_TITLES[NAME_KINDS[r['event']]]}: {r['local']} <-> {r['remote_addr']} "
                   f"PID={r['pid']} COMM={r['comm']}: {r['count']}")
    if report.summaries_read:
        out += record_lines(s["connection_summaries"], top)
    out += left_out_lines(report)
    return out


def _outcome_text(r):
    """How a lifecycle's connection ended, from its summary line: '; closed, 100 sent, 7 received, 40.638ms'."""
    if r is None:
        return ""
    duration = "" if r.duration_us is None else f", {r.duration_us / 1000:.3f}ms"
    return f"; {r.result}, {r.sent} sent, {r.received} received{duration}"


def _ms(value):
    return "-" if value is None else f"{value:.3f}ms"


def _conn_text(c):
    return f"{c['src']} -> {c['dst']} PID={c['pid']} COMM={c['comm']}"


def record_lines(r, top):
    """The tables of the connections' summary lines (Records.summary), as text."""
    out = [f"Connections (from the summary lines): {r['connections']}, {r['failed']} failed; "
           f"{r['bytes_sent']} bytes sent, {r['bytes_received']} received",
           "  failed by cause: " + (", ".join(f"{k} {n}" for k, n in r["failed_by_cause"].items()) or "none"),
           f"Failed connections by destination (top {top}): failed (by cause)"]
    for f in r["failed_by_destination"]:
        out.append(f"  {f['remote']}: {f['failed']} (" + ", ".join(f"{k} {n}" for k, n in f["causes"].items()) + ")")
    out.append(f"Top connections by bytes (top {top}): sent, received (result, duration)")
    for c in r["top_connections_by_bytes"]:
        out.append(f"  {_conn_text(c)}: {c['bytes_sent']} sent, {c['bytes_received']} received "
                   f"({c['result']}, {_ms(c['duration_ms'])})")
    out.append(f"Top processes by bytes (top {top}): sent, received, connections")
    for p in r["top_processes_by_bytes"]:
        out.append(f"  PID={p['pid']} COMM={p['comm']}: {p['bytes_sent']} sent, {p['bytes_received']} received, "
                   f"{p['connections']} connections")
    out.append(f"Slowest handshakes (top {top}): handshake (direction, result)")
    for c in r["slowest_handshakes"]:
        out.append(f"  {_conn_text(c)}: {_ms(c['handshake_ms'])} ({c['direction'] or '-'}, {c['result']})")
    out.append(f"Resets by who sent them (top {top}): {r['failed_by_cause'].get('reset-sent', 0)} sent by us, "
               f"{r['failed_by_cause'].get('reset-received', 0)} by the peer")
    for p in r["resets_sent_by_process"]:
        out.append(f"  sent by PID={p['pid']} COMM={p['comm']}: {p['connections']} connections")
    for e in r["resets_received_by_remote"]:
        out.append(f"  received from {e['remote']}: {e['connections']} connections")
    return out


RECORD_TABLES = (("failed_destinations", "Failed connections by destination"),
                 ("process_bytes", "Top processes by bytes"), ("resets_sent", "Resets sent by process"),
                 ("resets_received", "Resets received by remote"))


def left_out_lines(report):
    """What the bounded tables let go, in words; [] if nothing."""
    lo = report.left_out
    if not lo:
        return []
    parts = [f"{lo[k]} events not counted in {what}" for k, what in
             (("processes", "Processes"), ("units", "Units"), ("containers", "Containers"), ("users", "Users"),
              ("remotes", "Remote endpoints"), ("resets", "Resets")) if lo[k]]
    parts += [f"{lo[k]} connections not counted in {what}" for k, what in RECORD_TABLES if lo[k]]
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
    for table in ("top_connections_by_bytes", "slowest_handshakes"):
        for c in s.get("connection_summaries", {}).get(table, ()):
            c["end"] = stamp(c.pop("end_ns"))
    if lifecycles:
        s["connections"] = [_connection(c, stamp, report.outcomes.get(c)) for c in report.tracker.connections()]
        s["connections_not_kept"] = report.tracker.left_out
    return json.dumps(s, indent=2)


def _connection(c, stamp, outcome=None):
    """One of tracker.connections() as a dict for --json; outcome: its Summary, if a summary line joined it."""
    d = Tracker.describe(c)
    more = {} if outcome is None else {
        "result": outcome.result, "bytes_sent": outcome.sent, "bytes_received": outcome.received,
        "duration_ms": None if outcome.duration_us is None else round(outcome.duration_us / 1000, 3)}
    return {
        "src": d["src"], "dst": d["dst"], "pid": d["pid"], "comm": d["comm"], "first": stamp(d["first_ns"]),
        "duration_s": round((d["last_ns"] - d["first_ns"]) / 1e9, 3), "retransmits": d["retransmits"],
        "steps": [{"time": stamp(ts), "what": what} for ts, what in d["steps"]],
        "steps_not_kept": d["steps_not_kept"], **more,
    }
