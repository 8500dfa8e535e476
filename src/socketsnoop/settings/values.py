"""The type functions of the monitor's options that are not filters: text (from the command line or the
config file) -> value, or a one-line error (exit 2) naming the option."""

import ipaddress

from ..errors import SnoopError
from ..output.metric_labels import parse_labels
from ..output.syslog import parse_url


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


# the least number of seconds: a period (how often something is said or refreshed) shorter than the main loop's
# wake-up (0.1 s) would only mean "on every wake-up", and a per-second rate over less would be noise; a time to
# wait or a threshold less than a millisecond, a typo
PERIOD_FLOOR = 0.1
WAIT_FLOOR = 0.001


def seconds(option, floor=WAIT_FLOOR, maximum=10**9):
    """The type of every option that takes seconds: a finite number from floor to maximum (nan, inf, zero and
    negatives refused, with the range in the message)."""
    def conv(value):
        try:
            v = float(value)
        except (TypeError, ValueError):
            v = None
        if v is None or not floor <= v <= maximum:  # also refuses nan and inf
            raise SnoopError(f"socket-snoop: {option}: invalid value {value!r}: seconds, from {floor:.15g} to "
                             f"{maximum:.15g}", 2)
        return v
    return conv


def nice_decrement(value):
    """--priority-boost: an integer from 0 (no boost) to 20 (nice -20)."""
    try:
        v = int(value)
    except ValueError:
        v = None
    if v is None or not 0 <= v <= 20:
        raise SnoopError(f"socket-snoop: --priority-boost: invalid value {value!r}: 0 (none) to 20", 2)
    return v


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


def show_listen(value):
    """(address, port) -> the text parse_listen takes."""
    host, port = value
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def metrics_labels(value):
    try:
        parse_labels([value])
    except ValueError as e:
        raise SnoopError(f"socket-snoop: --metrics-labels: {e}", 2) from None
    return value
