"""The monitor's options, declared once (MONITOR_OPTIONS): the parser built from them (its --help ends with
examples), the config file under it, the filters from them. One place, used by `run`, `check`, `report`
and `service`."""

import argparse
import ipaddress

from .. import __version__
from ..errors import SnoopError
from ..output.metric_labels import DEFAULT_LABEL_LIMIT, parse_labels
from ..pipeline.filters import (
    Filters,
    parse_cgroup,
    parse_cidr,
    parse_comm,
    parse_container,
    parse_pid,
    parse_port,
    parse_state,
    parse_uid,
    parse_unit,
)
from ..output.syslog import FACILITIES, parse_url
from .cmdline import CONST, LIST, SWITCH, VALUE, CommandParser, Option
from .config import parse_with_config
from .warn_options import WARNING_OPTIONS

DEFAULT_LOG = "/var/log/socket_monitor.log"
DEFAULT_CONFIG = "/etc/socket-snoop/config.toml"

EXAMPLES = """\
examples:
  socket-snoop                         # every TCP state change, console and /var/log/socket_monitor.log
  socket-snoop -P 22 -P 443            # connections with port 22 or 443 at either end
  socket-snoop --dst 10.0.0.0/8 --dst 2001:db8::/32   # remote end in either prefix
  socket-snoop -c nginx -s ESTABLISHED # nginx's connections reaching ESTABLISHED
  socket-snoop -p 1234 --no-log-file   # process 1234 only, console only
  socket-snoop --unit nginx.service --context   # what nginx.service does, with user, unit, container, pod
  socket-snoop --exclude-unit backup.service --exclude-uid 1000   # everything but the backup job and uid 1000
  socket-snoop --cgroup /kubepods.slice --json   # every pod's connections, new pods too
  socket-snoop --json -q --log-file /var/log/socket_monitor.json   # JSON lines to a file only
  socket-snoop -q --journal            # to the journal: journalctl SOCKETSNOOP_DPORT=443
  socket-snoop --syslog tls://logs.example.org:6514 --syslog-ca /etc/ssl/logs-ca.pem
  socket-snoop --duration 60 --stats 10   # one minute, a summary line every 10 s
  socket-snoop --metrics 9100 -q --no-log-file   # Prometheus counts on 127.0.0.1:9100 only, no lines
  socket-snoop check                   # can this host run the monitor?
  socket-snoop service install         # systemd unit + logrotate, hardened
  socket-snoop report /var/log/socket_monitor.log*   # lifecycles and summary from logs
"""


def parse_size(value):
    """'8M', '512K', '16777216' -> bytes."""
    text = str(value).strip().upper().rstrip("B")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    try:
        n = int(text[:-1] if mult > 1 else text)
    except ValueError:
        raise SnoopError(f"socket-snoop: --buffer-size: invalid value {value!r}: e.g. 8M or 512K", 2) from None
    size = n * mult
    if not (1 << 16) <= size <= (1 << 30):
        raise SnoopError(f"socket-snoop: --buffer-size: {value!r} is out of range (64K to 1G)", 2)
    return size


def syslog_url(value):
    try:
        return parse_url(value)
    except ValueError as e:
        raise SnoopError(f"socket-snoop: --syslog: invalid value {value!r}: {e}", 2) from None


def positive(option, cast=float, maximum=10**9):
    """A finite number in (0, maximum]."""
    def conv(value):
        try:
            v = cast(value)
        except ValueError:
            v = None
        if v is None or not 0 < v <= maximum:  # also refuses nan and inf
            raise SnoopError(f"socket-snoop: {option}: invalid value {value!r}: "
                             f"a positive number, at most {maximum}", 2)
        return v
    return conv


def parse_listen(value, option="--metrics"):
    """'9100', '0.0.0.0:9100', '[::1]:9100' -> (address, port); 127.0.0.1 unless an address is given."""
    text = str(value).strip()
    host, sep, port = text.rpartition(":")
    if not sep:
        host = "127.0.0.1"
    elif host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        host = str(ipaddress.ip_address(host))
        if ":" in host and not text.startswith("["):
            raise ValueError
        number = int(port)
        if not 1 <= number <= 65535:
            raise ValueError
    except ValueError:
        raise SnoopError(f"socket-snoop: {option}: invalid value {value!r}: [ADDR:]PORT, an IP address and a "
                         "port from 1 to 65535, e.g. 9100, 0.0.0.0:9100 or [::1]:9100", 2) from None
    return host, number


def metrics_labels(value):
    try:
        parse_labels([value])
    except ValueError as e:
        raise SnoopError(f"socket-snoop: --metrics-labels: {e}", 2) from None
    return value


def metrics_from(opts):
    """(address, port, {label: cap}) for the metrics sink, or None without --metrics."""
    if not opts.metrics:
        if opts.metrics_labels:
            raise SnoopError("socket-snoop: --metrics-labels needs --metrics [ADDR:]PORT", 2)
        return None
    host, port = opts.metrics
    return host, port, parse_labels(opts.metrics_labels, opts.metrics_label_limit)


def _filter_type(parse, option):
    return lambda value: parse(value, option)


# the filters: the monitor's and `report`'s are the same
FILTER_OPTIONS = (
    *(Option(flags, LIST, text, type=_filter_type(parse, flags[-1])) for flags, parse, text in (
        (("-p", "--pid"), parse_pid, "owning process id (repeatable)"),
        (("-c", "--comm"), parse_comm, "owning command name, exact (repeatable)"),
        (("-P", "--port"), parse_port, "port at either end (repeatable)"),
        (("--src-port",), parse_port, "local port (SRC)"),
        (("--dst-port",), parse_port, "remote port (DST)"),
        (("-a", "--addr"), parse_cidr, "address or CIDR at either end, IPv4 or IPv6"),
        (("--src",), parse_cidr, "local address or CIDR"),
        (("--dst",), parse_cidr, "remote address or CIDR"),
        (("-s", "--state"), parse_state, "new state, e.g. ESTABLISHED, SYN_SENT, CLOSE (repeatable)"),
    )),
    *(Option(flags, LIST, text, type=_filter_type(parse, flags[-1]), metavar=metavar)
      for flags, parse, text, metavar in (
        (("--uid",), parse_uid, "owner's uid or user name (repeatable)", "UID"),
        (("--cgroup",), parse_cgroup, "socket's cgroup v2 PATH or below, e.g. /system.slice/nginx.service", "PATH"),
        (("--unit",), parse_unit, "systemd unit (its cgroup and below), e.g. nginx.service", "NAME"),
        (("--container",), parse_container, "container id, a unique prefix of at least 12 hex digits", "ID"),
        (("--exclude-pid",), parse_pid, "leave out this owning process id (repeatable)", "PID"),
        (("--exclude-comm",), parse_comm, "leave out this owning command name", "NAME"),
        (("--exclude-port",), parse_port, "leave out this port, at either end", "PORT"),
        (("--exclude-addr",), parse_cidr, "leave out this address or CIDR, at either end", "CIDR"),
        (("--exclude-uid",), parse_uid, "leave out this uid or user name", "UID"),
        (("--exclude-cgroup",), parse_cgroup, "leave out this cgroup and everything below it", "PATH"),
        (("--exclude-unit",), parse_unit, "leave out this systemd unit", "NAME"),
        (("--exclude-container",), parse_container, "leave out this container", "ID"),
    )),
    Option(("-4", "--ipv4"), SWITCH, "IPv4 only"),
    Option(("-6", "--ipv6"), SWITCH, "IPv6 only"),
    Option(("--no-retransmits",), SWITCH, "no retransmission events"),
    Option(("--no-resets",), SWITCH, "no reset events"),
)

# the monitor's options, declared once: its parser is built from them, and the config file's keys are
# their long names, converted by them (config.py)
MONITOR_OPTIONS = (
    ("output", (
        Option(("-q", "--quiet"), SWITCH, "no event lines on the console"),
        Option(("--log-file",), VALUE, f"append lines here (default {DEFAULT_LOG})", default=DEFAULT_LOG,
               metavar="PATH"),
        Option(("--no-log-file",), CONST, "write no log file", dest="log_file", const=None),
        Option(("--format",), VALUE, "line format (default text)", choices=("text", "json"), default="text"),
        Option(("--json",), CONST, "same as --format json", dest="format", const="json"),
        Option(("--context",), SWITCH,
               "text lines: append USER=, UNIT=, CONTAINER=, POD= (those known) after STATE="),
        Option(("--include-unspecified",), SWITCH,
               "also show events with an unspecified address (0.0.0.0, ::), e.g. listening sockets"),
        Option(("--no-report",), SWITCH, "no connection lifecycle report on exit"),
        Option(("--no-summary",), SWITCH,
               "no 'Connection Summary' line (JSON: \"event\": \"connection\") when a connection ends"),
        Option(("--summary-only",), SWITCH,
               "only the 'Connection Summary' lines, one per connection (the kernel sends no other events)"),
        Option(("--failed",), SWITCH,
               "only the summaries of connections that did not end in an orderly close (refused, timeout, "
               "unreachable, reset), filtered in the kernel"),
        Option(("--max-tracked",), VALUE, "connections the exit report keeps, the most recent (default 1000)",
               type=positive("--max-tracked", int, 10**7), default=1000, metavar="N"),
        Option(("--stats",), VALUE, "print a one-line summary on stderr every SECONDS", type=positive("--stats"),
               metavar="SECONDS"),
    )),
    ("outputs (any number at once; the journal and syslog each have a queue and a thread of their own)", (
        Option(("--metrics",), VALUE, "serve Prometheus metrics on ADDR:PORT (default address 127.0.0.1)",
               type=parse_listen, metavar="[ADDR:]PORT"),
        Option(("--metrics-labels",), LIST, "label the counts by comm, unit and/or container (comma-separated; "
               "NAME:N caps NAME at N distinct values, the rest are 'other')", type=metrics_labels, metavar="LIST"),
        Option(("--metrics-label-limit",), VALUE, f"distinct values kept per label (default {DEFAULT_LABEL_LIMIT})",
               type=positive("--metrics-label-limit", int, 100000), default=DEFAULT_LABEL_LIMIT, metavar="N"),
        Option(("--journal",), SWITCH, "each event to the systemd journal (native protocol)"),
        Option(("--journal-socket",), VALUE,
               "the journal's socket (implies --journal; default /run/systemd/journal/socket)", metavar="PATH"),
        Option(("--syslog",), VALUE,
               "RFC 5424 messages to a collector: udp://HOST:PORT, tcp://HOST:PORT or tls://HOST:PORT",
               type=syslog_url, metavar="URL"),
        Option(("--syslog-facility",), VALUE, "syslog facility (default daemon; kern, user, ..., local0 to local7)",
               choices=tuple(FACILITIES), default="daemon", metavar="NAME"),
        Option(("--syslog-ca",), VALUE,
               "CA certificates (PEM) that sign the tls:// collector's certificate (default: the system's)",
               metavar="FILE"),
        Option(("--output-queue",), VALUE, "events the journal and syslog outputs each hold while the receiver "
               "is slow or down (default 10000); what does not fit is dropped and counted",
               type=positive("--output-queue", int, 10**7), default=10000, metavar="N"),
    )),
    ("running", (
        Option(("--duration",), VALUE, "stop after SECONDS", type=positive("--duration"), metavar="SECONDS"),
        Option(("--buffer",), VALUE,
               "kernel-to-user buffer: BPF ring buffer (default, Linux 5.8+) or perf buffer",
               choices=("ringbuf", "perf"), default="ringbuf"),
        Option(("--buffer-size",), VALUE, "buffer size, e.g. 32M (default), rounded up to a power of two",
               type=parse_size, default=32 << 20, metavar="SIZE"),
        Option(("--config",), VALUE, f"config file (default {DEFAULT_CONFIG} if it exists)", metavar="PATH",
               in_file=False),
    )),
    ("health warnings", WARNING_OPTIONS),
    ("filters (in the kernel; values of one kind OR-ed, kinds AND-ed)", FILTER_OPTIONS),
)


def build_parser():
    p = CommandParser(
        prog="socket-snoop",
        description="Live TCP connection monitor (eBPF): every state change, retransmission and reset, "
                    "with the owning process. No packets are captured.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"socket-snoop {__version__}")
    for title, options in MONITOR_OPTIONS:
        p.add_group(title, options)
    return p


def filters_from(opts):
    return Filters(
        pids=set(opts.pid), comms=set(opts.comm), ports=set(opts.port), src_ports=set(opts.src_port),
        dst_ports=set(opts.dst_port), addrs=list(opts.addr), srcs=list(opts.src), dsts=list(opts.dst),
        states=set(opts.state), ipv4_only=opts.ipv4, ipv6_only=opts.ipv6, no_retransmits=opts.no_retransmits,
        no_resets=opts.no_resets, include_unspecified=opts.include_unspecified, failed=getattr(opts, "failed", False),
        exclude_pids=set(opts.exclude_pid), exclude_comms=set(opts.exclude_comm), exclude_ports=set(opts.exclude_port),
        exclude_addrs=list(opts.exclude_addr), uids=set(opts.uid), exclude_uids=set(opts.exclude_uid),
        cgroups=list(opts.cgroup), exclude_cgroups=list(opts.exclude_cgroup), units=list(opts.unit),
        exclude_units=list(opts.exclude_unit), containers=list(opts.container),
        exclude_containers=list(opts.exclude_container),
    ).check()


def monitor_options(argv):
    """The monitor's options: the config file's, then argv's."""
    opts = parse_with_config(build_parser(), argv, DEFAULT_CONFIG)
    if opts.failed:
        opts.summary_only = True
    if opts.summary_only and opts.no_summary:
        raise SnoopError("socket-snoop: --summary-only (or --failed) and --no-summary exclude each other", 2)
    return opts


def options_from_config(config=None):
    """The options `socket-snoop` would run with, given only a config file (None: the default one)."""
    return monitor_options(["--config", config] if config else [])
