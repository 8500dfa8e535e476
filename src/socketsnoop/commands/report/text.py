"""The report as text, for people: the summary and its tables first, then the distributions, then the
lifecycles of the most recent connections (as many as asked). Bytes and durations in human units."""

from ...kernel.abi import EV_RESET_RECEIVED, EV_RESET_SENT
from ...logformat.words import EVENT_TITLES
from .bounds import MAX_COMM, MAX_NAME
from .files import MAX_LINE
from .histograms import bar, minute_label
from .parse import NAME_KINDS
from .units import human_bytes, human_us


def text_lines(report, top, lifecycles, stamp):
    """The report's lines (no newlines); lifecycles: how many of the most recent to show (0: none)."""
    s = report.summary(top)
    yield summary_line(report, stamp)
    yield "  by event: " + (", ".join(f"{EVENT_TITLES[NAME_KINDS[k]]} {n}" for k, n in s["by_event"].items())
                            or "none")
    yield "  states reached: " + (", ".join(f"{k} {n}" for k, n in s["states"].items()) or "none")
    if s["warnings"]:
        yield "  health warnings: " + ", ".join(f"{k} {n}" for k, n in s["warnings"].items())
    if s["drops"]["packets"]:
        d = s["drops"]
        yield (f"  packets dropped: {d['packets']} on {d['connections']} connections (their most frequent reason: "
               + ", ".join(f"{k} {n}" for k, n in d["by_reason"].items()) + ")")
    yield f"Processes (top {top}): established, retransmits, resets"
    for p in s["processes"]:
        yield (f"  PID={p['pid']} COMM={p['comm']}: {p['established']} established, "
               f"{p['retransmits']} retransmits, {p['resets']} resets")
    for table, title in (("units", "Units"), ("containers", "Containers"), ("users", "Users")):
        if s[table]:  # only when the logs carry them (JSON, or text written with --context)
            yield f"{title} (top {top}): events, established, retransmits, resets"
            for g in s[table]:
                yield (f"  {g['name']}: {g['events']} events, {g['established']} established, "
                       f"{g['retransmits']} retransmits, {g['resets']} resets")
    yield f"Remote endpoints (top {top}, by service: a client's port as *): events, established"
    for r in s["remotes"]:
        ours = f" to local port {r['service_port']}" if r["service"] == "local" else ""
        yield f"  {r['remote']}{ours}: {r['events']} events, {r['established']} established"
    yield f"Resets (top {top}): {report.kinds[EV_RESET_SENT]} sent, {report.kinds[EV_RESET_RECEIVED]} received"
    for r in s["resets"]:
        yield (f"  {EVENT_TITLES[NAME_KINDS[r['event']]]}: {r['local']} <-> {r['remote_addr']} "
               f"PID={r['pid']} COMM={r['comm']}: {r['count']}")
    if report.summaries_read:
        yield from record_lines(s["connection_summaries"], top)
    yield from distribution_lines(report)
    yield from left_out_lines(report)
    if lifecycles:
        yield ""
        yield from lifecycle_lines(report, lifecycles, stamp)


def summary_line(report, stamp):
    span = f"{stamp(report.first)} to {stamp(report.last)}" if report.first is not None else "no events"
    malformed = ""
    if report.malformed is not None:  # counted once for all hosts: shown on the report of the local log only
        cut = f" ({report.too_long} over {MAX_LINE} bytes)" if report.too_long else ""
        blank = f"; {report.blank} blank lines" if report.blank else ""
        malformed = f"; {report.malformed} malformed lines skipped{cut}{blank}"
        if report.shared.names.cut:
            malformed += (f"; {report.shared.names.cut} names cut (COMM over {MAX_COMM} bytes, others over "
                          f"{MAX_NAME} characters)")
    summaries = f" and {report.records.count} connection summaries" if report.summaries_read else ""
    return f"Summary: {report.events} events{summaries} ({span}); {report.filtered} filtered out{malformed}"


def lifecycle_lines(report, n, stamp):
    life = report.lifecycles
    shown = life.recent(n)
    yield from life.lines(shown, stamp, lambda c: _outcome_text(report.outcomes.get(c)))
    if life.left_out:
        yield (f"({life.left_out} connections not kept: the report keeps the {life.max_conns} most recently "
               "closed and as many of the most recently opened, within its memory budget)")
    more = len(life) - len(shown)
    yield (f"Connections: {len(shown)} shown, {life.left_out + more} not shown"
           + (f" ({more} older ones kept: --lifecycles N shows the N most recent)" if more else ""))


def _outcome_text(r):
    """How a lifecycle's connection ended, from its summary line: '; closed, 100 B sent, 7 B received, 40.6 ms'."""
    if r is None:
        return ""
    duration = "" if r.duration_us is None else f", {human_us(r.duration_us)}"
    return f"; {r.result}, {human_bytes(r.sent)} sent, {human_bytes(r.received)} received{duration}"


def _ms(value):
    return human_us(None if value is None else round(value * 1000))


def _conn_text(c):
    return f"{c['src']} -> {c['dst']} PID={c['pid']} COMM={c['comm']}"


def record_lines(r, top):
    """The tables of the connections' summary lines (Records.summary), as text."""
    yield (f"Connections (from the summary lines): {r['connections']}, {r['failed']} failed; "
           f"{human_bytes(r['bytes_sent'])} sent, {human_bytes(r['bytes_received'])} received")
    yield "  failed by cause: " + (", ".join(f"{k} {n}" for k, n in r["failed_by_cause"].items()) or "none")
    yield f"Failed connections by destination (top {top}): failed (by cause)"
    for f in r["failed_by_destination"]:
        yield f"  {f['remote']}: {f['failed']} (" + ", ".join(f"{k} {n}" for k, n in f["causes"].items()) + ")"
    yield f"Top connections by bytes (top {top}): sent, received (result, duration)"
    for c in r["top_connections_by_bytes"]:
        yield (f"  {_conn_text(c)}: {human_bytes(c['bytes_sent'])} sent, {human_bytes(c['bytes_received'])} "
               f"received ({c['result']}, {_ms(c['duration_ms'])})")
    yield f"Top processes by bytes (top {top}): sent, received, connections"
    for p in r["top_processes_by_bytes"]:
        yield (f"  PID={p['pid']} COMM={p['comm']}: {human_bytes(p['bytes_sent'])} sent, "
               f"{human_bytes(p['bytes_received'])} received, {p['connections']} connections")
    yield f"Slowest handshakes (top {top}): handshake (direction, result)"
    for c in r["slowest_handshakes"]:
        yield f"  {_conn_text(c)}: {_ms(c['handshake_ms'])} ({c['direction'] or '-'}, {c['result']})"
    yield (f"Resets by who sent them (top {top}): {r['failed_by_cause'].get('reset-sent', 0)} sent by us, "
           f"{r['failed_by_cause'].get('reset-received', 0)} by the peer")
    for p in r["resets_sent_by_process"]:
        yield f"  sent by PID={p['pid']} COMM={p['comm']}: {p['connections']} connections"
    for e in r["resets_received_by_remote"]:
        yield f"  received from {e['remote']}: {e['connections']} connections"


def distribution_lines(report):
    """bpftrace-style log2 histograms of the summary lines' times, and the connections a minute."""
    r = report.records
    for title, hist in (("Connection duration", r.durations), ("Handshake time", r.handshake_times),
                        ("RTT", r.rtts)):
        if hist.count():
            yield f"{title} (microseconds, log2), {hist.count()} connections:"
            yield from ("  " + line for line in hist.lines())
    minutes = report.minutes()
    rows = minutes.rows()
    if rows:
        what = "summary lines" if report.summaries_read else "ESTABLISHED lines"
        step = rows[0][1]
        yield f"Connections per {'minute' if step == 1 else f'{step} minutes'} ({what}):"
        top = max(n for _, _, n in rows)
        yield from (f"  {minute_label(m)}{n:>8} |{bar(n, top)}|" for m, _, n in rows)
        if minutes.late:
            yield f"  ({minutes.late} connections not counted: no room for more minutes)"


def left_out_lines(report):
    """What the bounded tables let go, in words; [] if nothing."""
    lo = report.left_out
    if not lo:
        return
    parts = [f"{lo[k]} events not counted in {what}" for k, what in
             (("processes", "Processes"), ("units", "Units"), ("containers", "Containers"), ("users", "Users"),
              ("remotes", "Remote endpoints"), ("resets", "Resets")) if lo[k]]
    parts += [f"{lo[k]} connections not counted in {what}" for k, what in RECORD_TABLES if lo[k]]
    if parts:
        budget = f", all tables together {human_bytes(report.budget.limit)}" if report.budget.refused else ""
        parts[0] = parts[0] + f" (each table keeps its first {report.table_limit} keys{budget})"
    if lo["joins"]:
        budget = " or no room in the tables' memory" if report.budget.refused else ""
        parts.append(f"{lo['joins']} of the oldest unclosed connections forgotten for joining lines "
                     f"(more than {report.join_limit} at once{budget}): their later lines start new connections")
    yield "Left out: " + "; ".join(parts)


RECORD_TABLES = (("failed_destinations", "Failed connections by destination"),
                 ("process_bytes", "Top processes by bytes"), ("resets_sent", "Resets sent by process"),
                 ("resets_received", "Resets received by remote"))
