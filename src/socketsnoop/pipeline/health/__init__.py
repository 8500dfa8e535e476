"""Health warnings: the TCP problems that recur on real hosts, named with their owner (close-wait-leak,
connect-failures, retransmits, port-scan, syn-flood, port-exhaustion), computed from the events and connection records
the monitor already has. A stage of the pipeline: the dispatch feeds it each batch (events(), records()), the
monitor's loop calls tick() about once a second and hands the HealthWarnings it returns to the outputs."""

from operator import itemgetter

from ..decode import NEWSTATE
from .alerts import ACTIVE, CLEARED, HealthWarning, Owner, Thresholds
from .accept_queue import AcceptQueueOverflow
from .listeners import SynFlood
from .sockets import CloseWaitLeak, PortExhaustion
from .traffic import ConnectFailures, PortScan, Retransmits

KINDS = (CloseWaitLeak, ConnectFailures, Retransmits, PortScan, SynFlood, PortExhaustion, AcceptQueueOverflow)
_new = itemgetter(NEWSTATE)
KIND_NAMES = tuple(k.kind for k in KINDS)

__all__ = ["ACTIVE", "CLEARED", "Health", "KIND_NAMES", "Owner", "Thresholds", "HealthWarning"]


class Health:
    """The warning kinds, fed and ticked together. said: warnings said so far, per kind (cleared ones not)."""

    def __init__(self, thresholds=Thresholds()):
        self.kinds = [k(thresholds) for k in KINDS if getattr(thresholds, k.setting) is not None]  # KIND=off
        self._events = [k.events for k in self.kinds if hasattr(k, "events")]
        self._records = [k.records for k in self.kinds if hasattr(k, "records")]
        self._listen_drops = [k.listen_drops for k in self.kinds if hasattr(k, "listen_drops")]
        self.said = dict.fromkeys(KIND_NAMES, 0)

    def events(self, rows):
        news = bytes(map(_new, rows))  # the rows' new states, shared: each kind tests them at C speed
        for feed in self._events:
            feed(rows, news)

    def records(self, rows):
        for feed in self._records:
            feed(rows)

    def listen_drops(self, table, now_ns):
        """The kernel's counts of listeners' accept queue overflows (kernel/loader.py: Probe.listen_drops)."""
        for feed in self._listen_drops:
            feed(table, now_ns)

    def tick(self, now_ns):
        """The warnings of this tick (now_ns: CLOCK_MONOTONIC, the events' clock), of every kind."""
        out = []
        for k in self.kinds:
            out += k.tick(now_ns)
        for w in out:
            if w.status == ACTIVE:
                self.said[w.kind] += 1
        return out

    def overflow(self):
        """Per kind: what was not followed because the kind's keys were full (MAX_KEYS)."""
        return {k.kind: k.overflow + k.alerts.overflow for k in self.kinds}
