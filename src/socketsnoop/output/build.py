"""The outputs a monitor's options ask for, built and opened: each a Sink (output/sinks.py), in the order they
are written to (the console first, the log file, the journal, syslog, the metrics endpoint)."""

import importlib
import os

from ..errors import SnoopError
from ..pipeline.identity import CgroupTree, Identity
from ..logformat.compact import CompactFormatter
from ..logformat.jsonline import JsonFormatter
from ..logformat.text import TextFormatter
from .journal import DEFAULT_SOCKET, JournalSink
from .colour import wants_colour
from .console import ConsoleSink
from .sinks import LogFileSink, UnsafeLogPath
from .relp import syslog_sink


def metrics_module():
    """output/metrics.py, imported only for --metrics: prometheus_client costs about 9 MB and 50 ms at start,
    and a host may run the monitor without it (a one-line error then, only where --metrics asks for it)."""
    try:
        return importlib.import_module(".metrics", __package__)
    except ModuleNotFoundError as e:
        raise SnoopError(f"socket-snoop: --metrics needs the Python package prometheus-client ({e.name} is "
                         "missing): install.sh installs it, or pip install prometheus-client") from None


def formatters(opts, filters, clock, warn, metrics=None):
    """(cgroups, identity, text formatter, the lines' formatter): the owner's names (user, cgroup, unit,
    container, pod, exe) are looked up only where an output shows them (JSON, --context, and the metrics'
    unit and container labels, the same names as the JSON's); the cgroup tree also where a filter names
    cgroups (CgroupTree, Identity: pipeline/identity.py; None where not needed). metrics: as open_sinks takes it.
    --format compact is the console's alone (console_sink): the lines of every other output are text."""
    names = opts.format == "json" or opts.context or bool(metrics and {"unit", "container"} & set(metrics[2]))
    cgroups = CgroupTree() if names or filters.wants_cgroups() else None
    identity = Identity(cgroups, warn=warn) if names else None
    text = TextFormatter(clock, identity, opts.context)
    lines = JsonFormatter(clock, identity) if opts.format == "json" else text
    if opts.drops:
        for f in {id(text): text, id(lines): lines}.values():
            f.show_drops()
    return cgroups, identity, text, lines


def open_sinks(opts, clock, metrics, lost_counts, warn, identity=None, kernel_counts=None, kernel_records=False):
    """The sinks, opened. metrics: (address, port, labels) or None; lost_counts() -> {where: count}, what
    the metrics endpoint shows as lost; warn(text) says a problem on stderr; identity: the owner's names for
    the metrics' unit and container labels and the queued outputs' JSON fields; kernel_counts() -> the kernel's
    metric counts, where it keeps them (counting without transfer: the events', and with kernel_records the
    connection records' too). A usage problem raises SnoopError."""
    sinks = []
    if not opts.quiet:
        sinks.append(console_sink(opts, clock, warn))
    if opts.log_file:
        sinks.append(log_file_sink(opts.log_file, warn))
    sinks += queued_sinks(opts, clock, warn, identity)
    if metrics:  # opened first: a port in use is said before any output's thread starts
        host, port, labels = metrics
        try:
            metrics_sink = metrics_module().MetricsSink(host, port, labels, stats=lost_counts, identity=identity,
                                                        kernel=kernel_counts, kernel_records=kernel_records).open()
        except OSError as e:
            raise SnoopError(f"socket-snoop: --metrics: cannot listen on {host}:{port}: "
                             f"{e.strerror or e}") from None
    for sink in sinks:
        sink.open()
    if metrics:
        sinks.append(metrics_sink)
    return sinks


def console_sink(opts, clock, warn, fd=1):
    """Standard output: the lines of --format (compact: its own, with a header line on a terminal), coloured
    as --color says (never JSON lines)."""
    compact = opts.format == "compact"
    try:
        terminal = os.isatty(fd)
    except OSError:
        terminal = False
    return ConsoleSink(capacity=opts.output_queue, fd=fd, warn=warn,
                       formatter=(CompactFormatter(clock).show_drops() if opts.drops else CompactFormatter(clock))
                       if compact else None,
                       colour=opts.format != "json" and wants_colour(opts.color, fd), header=compact and terminal,
                       summary=not opts.no_summary)


def log_file_sink(path, warn):
    try:
        return LogFileSink(path, warn=warn)
    except UnsafeLogPath as e:
        raise SnoopError(f"socket-snoop: refusing the log file {path}: {e}", 2) from None
    except OSError as e:
        raise SnoopError(f"socket-snoop: cannot write the log file {path}: "
                         f"{e.strerror} (use --log-file PATH or --no-log-file)") from None


def queued_sinks(opts, clock, warn, identity=None):
    """--journal, --syslog: each a QueuedSink (a bounded queue and a writer thread of its own); with --json
    their fields are the JSON line's, the owner's names (identity's) included."""
    o, out = opts, []
    text = o.format != "json"
    kw = dict(capacity=o.output_queue, warn=warn, json_lines=not text, identity=identity)
    if o.journal or o.journal_socket:
        out.append(JournalSink(clock, text, path=o.journal_socket or DEFAULT_SOCKET, **kw))
    if o.syslog:
        if o.syslog_ca and o.syslog.scheme != "tls":
            warn(f"socket-snoop: warning: --syslog-ca is for tls:// collectors; {o.syslog} does not use it")
        try:
            out.append(syslog_sink(clock, text, o.syslog, facility=o.syslog_facility, ca=o.syslog_ca, **kw))
        except (OSError, ValueError) as e:  # ssl: the CA file missing or not PEM
            raise SnoopError(f"socket-snoop: --syslog-ca {o.syslog_ca}: cannot use it: "
                             f"{getattr(e, 'strerror', None) or e}", 2) from None
    if o.drops:  # their own text lines (with --json): a drop's message ends with its reason too
        for sink in out:
            sink.text.show_drops()
            sink.fields.show_drops()
            sink.encoder.show_drops()
    return out
