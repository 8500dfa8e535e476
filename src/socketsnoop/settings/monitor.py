"""The monitor's options, each declared once (OUTPUT, OUTPUTS, RUNNING, and the filters from
pipeline/filters.py): the parser built from them (its --help lists the commands and ends with examples), the
config file read by them, the typed settings (RunSettings) every command gets from them."""

import argparse
import sys

from .. import __version__
from ..errors import SnoopError
from ..output.colour import COLOR_CHOICES
from ..output.metric_labels import DEFAULT_LABEL_LIMIT, OTHER, parse_labels
from ..output.syslog import FACILITIES
from ..pipeline.filters import FILTERS, SWITCHES, Filters
from .file import parse_with_config
from .sandbox import conflict_line
from .option import CONST, LIST, SWITCH, VALUE, CommandParser, Option, freeze, settings_class
from .warnings import WARNING_OPTIONS
from .values import PERIOD_FLOOR, metrics_labels, nice_decrement, parse_listen, parse_size, positive, seconds, \
    show_listen, syslog_url

DEFAULT_LOG = "/var/log/socket_monitor.log"
DEFAULT_CONFIG = "/etc/socket-snoop/config.toml"

# the commands besides the monitor itself (cli.py dispatches them), as --help lists them
COMMANDS = (
    ("check", "can this host run the monitor? (one line per need, then a verdict)"),
    ("service", "install or remove the systemd unit and the logrotate file"),
    ("report", "lifecycles and a summary from the logs the monitor wrote"),
    ("config", "the effective configuration, as a config file; the example config, the man page, bash completion"),
    ("top", "live view of connections per process, unit, container, remote...: opened, failed, resets, latency"),
)

EXAMPLES = """\
examples:
  socket-snoop                         # every TCP state change, console and /var/log/socket_monitor.log
  socket-snoop -P 22 -P 443            # connections with port 22 or 443 at either end
  socket-snoop --dst 10.0.0.0/8 --dst 2001:db8::/32   # remote end in either prefix
  socket-snoop -c nginx -s ESTABLISHED # nginx's connections reaching ESTABLISHED
  socket-snoop --format compact -P 443 # in columns on the console (the log file stays text)
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
  socket-snoop config --json -P 443    # the configuration it would run with, as a config file
"""

OUTPUT = (
    Option(("-q", "--quiet"), SWITCH, "no event lines on the console"),
    Option(("--log-file",), VALUE, f"append lines here (default {DEFAULT_LOG})", default=DEFAULT_LOG, metavar="PATH",
           value_type=str | None),
    Option(("--no-log-file",), CONST, "write no log file", dest="log_file", const=None),
    Option(("--format",), VALUE, "line format (default text); compact: the console's alone, in columns for "
           "people (the log file and the other outputs stay text)", choices=("text", "json", "compact"),
           default="text", value_type=str),
    Option(("--json",), CONST, "same as --format json", dest="format", const="json"),
    Option(("--color",), VALUE, "colour resets, failed connections and lost events on the console: auto (a "
           "terminal, NO_COLOR unset), always or never; never in the log file or JSON (default auto)",
           choices=COLOR_CHOICES, default="auto", metavar="WHEN", value_type=str),
    Option(("--context",), SWITCH,
           "text lines: append USER=, UNIT=, USER_UNIT=, CONTAINER=, POD= (those known) after STATE="),
    Option(("--drops",), SWITCH, "each TCP packet the kernel drops as a line, with its reason (Linux 5.17+): "
           "'Packet Drop: ... REASON=NAME'; off by default, drops can be many (they are always counted: DROPS= "
           "on connection summaries, socketsnoop_drops_total)"),
    Option(("--no-report",), SWITCH, "no connection lifecycle report on exit"),
    Option(("--no-summary",), SWITCH,
           "no 'Connection Summary' line (JSON: \"event\": \"connection\") when a connection ends"),
    Option(("--summary-only",), SWITCH,
           "only the 'Connection Summary' lines, one per connection (the kernel sends no other events)"),
    Option(("--max-tracked",), VALUE, "connections the exit report keeps, the most recent (default 1000)",
           type=positive("--max-tracked", int, 10**7), default=1000, metavar="N", value_type=int),
    Option(("--stats",), VALUE, "print a one-line summary on stderr every SECONDS",
           type=seconds("--stats", PERIOD_FLOOR),
           metavar="SECONDS", value_type=float | None, example=10),
)

OUTPUTS = (
    Option(("--metrics",), VALUE, "serve Prometheus metrics on ADDR:PORT (default address 127.0.0.1)",
           type=parse_listen, metavar="[ADDR:]PORT", value_type=tuple | None, example="9100", show=show_listen),
    Option(("--metrics-labels",), LIST, "label the counts by comm, unit and/or container (comma-separated; "
           f"NAME:N caps NAME at N distinct values, the rest are '{OTHER}')", type=metrics_labels, metavar="LIST",
           example="comm:50", needs="--metrics"),
    Option(("--metrics-label-limit",), VALUE, f"distinct values kept per label (default {DEFAULT_LABEL_LIMIT})",
           type=positive("--metrics-label-limit", int, 100000), default=DEFAULT_LABEL_LIMIT, metavar="N",
           value_type=int, needs="--metrics-labels"),
    Option(("--journal",), SWITCH, "each event to the systemd journal (native protocol)"),
    Option(("--journal-socket",), VALUE,
           "the journal's socket (implies --journal; default /run/systemd/journal/socket)", metavar="PATH",
           value_type=str | None, example="/run/systemd/journal/socket"),
    Option(("--syslog",), VALUE,
           "RFC 5424 messages to a collector: udp://HOST:PORT, tcp://HOST:PORT, tls://HOST:PORT or relp://HOST[:PORT]",
           type=syslog_url, metavar="URL", example="tcp://192.0.2.10:514"),
    Option(("--syslog-facility",), VALUE, "syslog facility (default daemon; kern, user, ..., local0 to local7)",
           choices=tuple(FACILITIES), default="daemon", metavar="NAME", value_type=str, needs="--syslog"),
    Option(("--syslog-ca",), VALUE,
           "CA certificates (PEM) that sign the tls:// collector's certificate (default: the system's)",
           metavar="FILE", value_type=str | None, example="/etc/ssl/logs-ca.pem", needs="--syslog"),
    Option(("--output-queue",), VALUE, "lines the console, and events the journal and syslog outputs, each hold "
           "while their reader is slow or down (default 10000); what does not fit is dropped and counted",
           type=positive("--output-queue", int, 10**7), default=10000, metavar="N", value_type=int),
)

CONFIG = Option(("--config",), VALUE, f"config file (default {DEFAULT_CONFIG} if it exists)", metavar="PATH",
                in_file=False, commands=("run", "check", "service"), value_type=str | None)

# the monitor's scheduling priority (commands/priority.py; the service unit's Nice= says the same)
DEFAULT_PRIORITY_BOOST = 10
PRIORITY_BOOST = Option(("--priority-boost",), VALUE,
                        f"run at nice -N at least, when root (default {DEFAULT_PRIORITY_BOOST}; 0: as started): "
                        "under a flood the monitor keeps up with the processes of its own group",
                        type=nice_decrement, default=DEFAULT_PRIORITY_BOOST, metavar="N", value_type=int)

RUNNING = (
    Option(("--duration",), VALUE, "stop after SECONDS", type=seconds("--duration"), metavar="SECONDS",
           value_type=float | None, example=60),
    Option(("--buffer",), VALUE, "kernel-to-user buffer: BPF ring buffer (default, Linux 5.8+) or perf buffer",
           choices=("ringbuf", "perf"), default="ringbuf", value_type=str),
    Option(("--buffer-size",), VALUE, "buffer size, e.g. 32M (default), rounded up to a power of two",
           type=parse_size, default=32 << 20, metavar="SIZE", value_type=int),
    PRIORITY_BOOST,
    CONFIG,
)


def _kind_type(kind, option):
    return lambda value: kind.parse(value, option)


def _filter_options():
    """The filters' options, from their declarations (pipeline/filters.py): each kind's, then the
    exclusions, then the switches."""
    kinds = [Option(k.flags, LIST, k.help, type=_kind_type(k, k.flags[-1]), metavar=k.metavar, dest=k.name,
                    commands=("run", "report"), example=k.example, show=k.show) for k in FILTERS]
    exclusions = [Option((k.exclude_flag,), LIST, k.exclude, type=_kind_type(k, k.exclude_flag),
                         metavar=k.exclude_metavar, dest=k.exclude_name, commands=("run", "report"),
                         example=k.example, show=k.show)
                  for k in FILTERS if k.exclude]
    switches = [Option(s.flags, SWITCH, s.help, dest=s.name, commands=s.commands) for s in SWITCHES]
    return tuple(kinds + exclusions + switches)


FILTER_OPTIONS = _filter_options()
REPORT_FILTER_OPTIONS = tuple(o for o in FILTER_OPTIONS if "report" in o.commands)

GROUPS = (
    ("output", OUTPUT),
    ("outputs (any number at once; the journal and syslog each have a queue and a thread of their own)", OUTPUTS),
    ("running", RUNNING),
    ("health warnings", WARNING_OPTIONS),
    ("filters (in the kernel; values of one kind OR-ed, kinds AND-ed)", FILTER_OPTIONS),
)
MONITOR_OPTIONS = tuple(opt for _title, options in GROUPS for opt in options)

RunSettings = settings_class("RunSettings", MONITOR_OPTIONS,
                             "The monitor's settings: the config file's, then the command line's (frozen).")


def build_parser(prog="socket-snoop"):
    """The monitor's parser; prog: the command its errors name (`socket-snoop config` parses these options too)."""
    p = CommandParser(
        prog=prog,
        usage="socket-snoop [OPTIONS]\n       socket-snoop COMMAND [ARGS] (COMMAND: "
              + ", ".join(name for name, _ in COMMANDS) + "; socket-snoop COMMAND --help)",
        description="Live TCP connection monitor (eBPF): every state change, retransmission and reset, "
                    "with the owning process. No packets are captured.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"socket-snoop {__version__}")
    commands = p.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    for name, text in COMMANDS:
        stub = commands.add_parser(name, help=text, add_help=False)
        stub.add_argument("args", nargs=argparse.REMAINDER)
    for title, options in GROUPS:
        p.add_group(title, options)
    return p


def filters_from(opts, command="run"):
    """The Filters of the settings (or a command's parsed options) of `command`: the filter options it takes."""
    include = {k.name: getattr(opts, k.name) for k in FILTERS}
    exclude = {k.name: getattr(opts, k.exclude_name) for k in FILTERS if k.exclude}
    switches = {s.name: getattr(opts, s.name) for s in SWITCHES if command in s.commands}
    return Filters(include, exclude, switches).check()


def metrics_from(opts):
    """(address, port, {label: cap}) for the metrics sink, or None without --metrics."""
    if not opts.metrics:  # --metrics-labels without it: refused by its declaration (Option.needs)
        return None
    host, port = opts.metrics
    return host, port, parse_labels(opts.metrics_labels, opts.metrics_label_limit)


def _settings(argv, parser=None):
    parser = parser or build_parser()
    ns = parse_with_config(parser, argv, DEFAULT_CONFIG)
    if ns.command:
        parser.error(f"a command comes first, before any option: socket-snoop {ns.command} ...")
    if ns.failed:
        ns.summary_only = True
    if ns.summary_only and ns.no_summary:
        raise SnoopError("socket-snoop: --summary-only (or --failed) and --no-summary exclude each other", 2)
    if ns.quiet and (ns.format == "compact" or ns.color == "always"):
        what = "--format compact" if ns.format == "compact" else "--color always"
        raise SnoopError(f"socket-snoop: {what} is for the console, which --quiet turns off: give one", 2)
    if ns.format == "json" and ns.color == "always":
        raise SnoopError("socket-snoop: --color always and JSON lines conflict: JSON lines are never coloured", 2)
    return freeze(RunSettings, ns)


def monitor_options(argv, parser=None):
    """The monitor's RunSettings: the config file's, then argv's (parsed by `parser`, default build_parser()'s).
    In a unit installed by `service install`, a line on stderr when its sandbox forbids what they ask for."""
    settings = _settings(argv, parser)
    line = conflict_line(settings)
    if line:
        print(line, file=sys.stderr, flush=True)
    return settings


def options_from_config(config=None):
    """The RunSettings `socket-snoop` would run with, given only a config file (None: the default one)."""
    return _settings(["--config", config] if config else [])
