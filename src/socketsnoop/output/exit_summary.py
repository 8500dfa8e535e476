"""What the monitor says about itself, on stderr (standard output carries the events alone, so that a script
reading it never meets anything else): the exit summary ("Stopping monitoring...", the connections report,
the Totals and Outputs lines, a warning for whatever was lost), the --stats line, and the lost counts the
metrics endpoint shows. counters are the kernel's (Probe.counters(), indexed by abi.C_*)."""

import sys

from ..kernel.abi import (
    C_DROPS,
    DROP_REASONS,
    C_FILTERED,
    C_LOST,
    C_RECORDS,
    C_RECORDS_FILTERED,
    C_RECORDS_LOST,
    C_SEEN,
    C_SEEN_RESET_RECEIVED,
    C_SEEN_RESET_SENT,
    C_SEEN_RETRANSMIT,
    C_SEEN_STATE,
    C_SENT,
    C_STORAGE_FAILED,
)
from ..kernel.dropreasons import reason_name
from ..pipeline.owners import tcp_sockets
from .connections import OPEN_STATES
from .queued import QueuedSink
from .console import ConsoleSink

QUEUES = (QueuedSink, ConsoleSink)  # the outputs with a queue of their own, that may drop what does not fit


def say(msg):
    """One message on stderr, where everything the monitor says about itself goes."""
    try:
        print(msg, file=sys.stderr, flush=True)
    except (OSError, ValueError):  # stderr closed: nowhere left to say it
        pass


def say_exit(probe, dispatch, sinks, report_lines=(), warn=say):
    """The exit summary, then a warning for each kind of loss (by warn: coloured on a terminal)."""
    say("\n".join(exit_lines(probe, dispatch, sinks, report_lines)))
    for warning in warnings(probe, sinks):
        warn(warning)


def exit_lines(probe, dispatch, sinks, report_lines=()):
    """The exit summary's lines (no newlines): the report's (report_lines), Totals, and Outputs for the
    outputs that queue (or that dropped anything)."""
    c = probe.counters()
    user_filtered = sum(e.filtered for e in dispatch.enrichers)
    totals = (f"Totals: seen={c[C_SEEN]} captured={c[C_SENT]} filtered={c[C_FILTERED] + user_filtered} "
              f"lost={c[C_LOST]} missed={probe.missed(c)} lines={dispatch.lines}")
    if probe.records:
        records_filtered = sum(e.records_filtered for e in dispatch.enrichers)
        totals += (f" records={c[C_RECORDS]} records_filtered={c[C_RECORDS_FILTERED] + records_filtered}"
                   f" records_lost={c[C_RECORDS_LOST]}")
    totals += "".join(f" shed_{kind}={n}" for kind, n in probe.shed(c).items())
    drops = drops_by_name(probe) if probe.drops else None
    if drops is not None:
        totals += f" drops={c[C_DROPS]}"
    lines = ["Stopping monitoring...", "", *report_lines, totals]
    if drops:  # the TCP packets the kernel dropped, by reason, most first
        lines.append("Drops: " + " ".join(f"{name}={n}" for name, n in sorted(drops.items(), key=lambda kv: -kv[1])))
    outputs = outputs_line(sinks)
    return lines + [outputs] if outputs else lines


def report_lines(report, stamp, filters, owners):
    """The connections report: the records kept, then the connections open now (their owners from /proc);
    none without a report (--no-report)."""
    if report is None:
        return []
    owners.scan()
    return list(report.lines(stamp, tcp_sockets(states=OPEN_STATES), filters, owners.lookup))


def outputs_line(sinks):
    """'Outputs: journal dropped=0 syslog dropped=3': the outputs that queue, the console only when it dropped
    lines ('' for none)."""
    parts = [f"{s.name} dropped={s.dropped()}{s.details()}" for s in sinks
             if isinstance(s, QueuedSink) or isinstance(s, ConsoleSink) and s.dropped()]
    return "Outputs: " + " ".join(parts) if parts else ""


def warnings(probe, sinks):
    """One line for each kind of loss, with what to do about it."""
    c = probe.counters()
    missed = probe.missed(c)
    out = []
    if c[C_LOST]:
        by_kind = ", ".join(f"{n} {kind}" for kind, n in probe.shed(c).items() if n)
        out.append(f"socket-snoop: warning: {c[C_LOST]} events were lost (the buffer was full: the kernel shed "
                   f"event lines, {by_kind}; connection records have a ring of their own): raise --buffer-size, "
                   "or filter more")
    if c[C_STORAGE_FAILED]:
        out.append(f"socket-snoop: warning: {c[C_STORAGE_FAILED]} times the kernel had no room for a socket's state "
                   "(more sockets at once than its table holds): their owners may show as the task the kernel "
                   "ran in, and their records as incomplete")
    if c[C_RECORDS_LOST]:
        out.append(f"socket-snoop: warning: {c[C_RECORDS_LOST]} connection records were lost (their buffer was "
                   "full): raise --buffer-size, or filter more")
    out += [f"socket-snoop: warning: {s.dropped()} events could not be written to the {s.name}"
            for s in sinks if s.dropped()]
    if missed:
        out.append(f"socket-snoop: warning: the kernel skipped our programs {missed} times (a tracepoint hit "
                   "while one of them was already running on that CPU): those events were not seen")
    return out


def stats_line(before, after, missed, identity, sinks):
    """--stats: the rates between before and after, each (monotonic time, counters)."""
    (t0, c0), (t, c) = before, after
    seconds = t - t0
    d = {k: c[k] - c0[k] for k in (C_SENT, C_SEEN_STATE, C_SEEN_RETRANSMIT, C_SEEN_RESET_SENT,
                                    C_SEEN_RESET_RECEIVED, C_FILTERED, C_RECORDS)}
    text = (f"stats: {d[C_SENT] / max(seconds, 1e-9):.0f} events/s; state {d[C_SEEN_STATE]}, retransmit "
            f"{d[C_SEEN_RETRANSMIT]}, reset sent {d[C_SEEN_RESET_SENT]}, reset received {d[C_SEEN_RESET_RECEIVED]}; "
            f"filtered {d[C_FILTERED]}; records {d[C_RECORDS]}; lost so far {c[C_LOST]}, records lost so far "
            f"{c[C_RECORDS_LOST]}, missed so far {missed}")
    if identity is not None:
        s = identity.stats()
        text += (f"; identity lookups: cgroup {s['cgroup']} ({s['cgroup_walks']} walks), user {s['user']}, "
                 f"exe {s['exe']}")
    return text + "".join(f"; {s.name} dropped so far {s.dropped()}" for s in sinks if isinstance(s, QUEUES))


def drops_by_name(probe):
    """{reason name: packets} of the TCP drops the kernel counted (its BTF's names; 'OTHER' for the values past
    the kernel program's slots), {} where it counts none (before Linux 5.17)."""
    return {reason_name(v) if v < DROP_REASONS - 1 else "OTHER": n for v, n in probe.drop_reasons().items()}


def lost_counts(probe, sinks):
    """Events lost so far, by where: the kernel's ring, the kernel's skips, each output (for metrics)."""
    out = {}
    if probe is not None:
        c = probe.counters()
        out = {"kernel_ring": c[C_LOST], "kernel_missed": probe.missed(c), "shed": probe.shed(c),
               "drops": drops_by_name(probe)}
        if probe.records:
            out["kernel_records"] = c[C_RECORDS_LOST]  # connection records: their ring was full
    for sink in sinks:
        if sink.name != "metrics":
            out[sink.name.replace(" ", "_")] = sink.dropped()
    return out
