"""The health warnings' options (pipeline/health): on by default; --warn KIND=VALUE (repeatable) and
--no-warnings, declared as Option records for the monitor's parser and the config file (keys "warn", a list of
"KIND=VALUE", and "no-warnings"), and the Thresholds the monitor runs with."""

from ..errors import SnoopError
from ..pipeline.health import EVENT_MADE, RECORD_MADE, Thresholds
from .option import LIST, SWITCH, Option
from .values import PERIOD_FLOOR, seconds

# --warn's names: (Thresholds field, type, unit as --help says it)
WARN_SETTINGS = {
    "close-wait-leak": ("close_wait_leak", seconds("--warn close-wait-leak"),
                        "seconds a socket is held in CLOSE_WAIT (default 60)"),
    "connect-failures": ("connect_failures", int, "failed connects to one destination within 60 s (default 10)"),
    "retransmits": ("retransmits", float, "percent of a remote host's segments sent again within 60 s, "
                    "at least 10 of them (default 5)"),
    "port-scan": ("port_scan", int, "distinct closed ports one remote address touches within 10 s (default 20)"),
    "syn-flood": ("syn_flood", int, "half-open connections of one listener whose SYN-ACK was sent again within "
                  "10 s (default 100)"),
    "port-exhaustion": ("port_exhaustion", int, "connects to one destination failed for want of a local port "
                        "within 60 s (default 5)"),
    "accept-queue-overflow": ("accept_queue_overflow", int, "packets one listener dropped because its accept "
                              "queue was full (TCP_LISTEN_OVERFLOW, Linux 6.15+) within 10 s (default 1)"),
    "interval": ("interval", seconds("--warn interval", PERIOD_FLOOR),
                 "seconds before a lasting warning is said again (default 60)"),
}
WARN_HELP = ("change a warning's threshold, or turn one kind off with KIND=off (repeatable): "
             + "; ".join(f"{name}: {unit}" for name, (_f, _t, unit) in WARN_SETTINGS.items()))


def parse_warn(value):
    """'close-wait-leak=30' -> ('close_wait_leak', 30.0); 'port-scan=off' -> ('port_scan', None)."""
    kind, sep, number = str(value).partition("=")
    setting = WARN_SETTINGS.get(kind.strip())
    if not sep or setting is None:
        raise SnoopError(f"socket-snoop: --warn: {value!r}: expected KIND=VALUE, KIND one of "
                         f"{', '.join(WARN_SETTINGS)}", 2)
    field, cast, _unit = setting
    if number.strip() == "off" and field != "interval":
        return field, None
    try:
        n = cast(number)  # a seconds one refuses a bad value itself, with its range
    except ValueError:
        n = None
    if n is None or not 0 < n <= 10**9 or (field == "retransmits" and n > 100):
        raise SnoopError(f"socket-snoop: --warn {kind}: {number!r} is not a valid value ({_unit})", 2)
    return field, n


_NAMES = {field: name for name, (field, _t, _u) in WARN_SETTINGS.items()}


def show_warn(value):
    """('close_wait_leak', 30.0) -> 'close-wait-leak=30.0' (the config file's and `config`'s form)."""
    field, n = value
    return f"{_NAMES[field]}={'off' if n is None else n}"


WARNING_OPTIONS = (
    Option(("--warn",), LIST, WARN_HELP, type=parse_warn, metavar="KIND=VALUE", show=show_warn,
           example="close-wait-leak=120"),
    Option(("--no-warnings",), SWITCH, "no health warnings (close-wait-leak, connect-failures, retransmits, "
           "port-scan, syn-flood, port-exhaustion, accept-queue-overflow: on by default). --summary-only keeps "
           "those of the connection records (connect-failures, retransmits, port-exhaustion) and of the kernel's "
           "counts (accept-queue-overflow): the kernel sends no events then; --no-summary with --no-report keeps those "
           "of the events and of the kernel's counts: the kernel writes no connection records then"),
)

# the kinds made from events (EVENT_MADE): with --summary-only (or --failed) the kernel sends none, only
# connection records. The kinds made from connection records alone (RECORD_MADE): with --no-summary and
# --no-report (and no --metrics) nothing else wants the records, and the kernel writes none (at full churn the
# records would double the monitor's CPU for them)


def thresholds_from(opts):
    """The Thresholds the options ask for, or None (--no-warnings). On by default; with --summary-only only
    the kinds the connection records make (the others' events never leave the kernel); with --no-summary and
    --no-report (no --metrics) only those the events make (the kernel writes no records)."""
    if opts.no_warnings:
        return None
    thresholds = Thresholds()._replace(**dict(opts.warn or ()))
    if opts.summary_only:
        thresholds = thresholds._replace(**dict.fromkeys(EVENT_MADE))
    elif opts.no_summary and opts.no_report and not opts.metrics:
        thresholds = thresholds._replace(**dict.fromkeys(RECORD_MADE))
    return thresholds
