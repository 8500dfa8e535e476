"""Health warnings: the TCP problems that recur on real hosts, named with their owner (close-wait-leak,
connect-failures, retransmits, port-scan, syn-flood, port-exhaustion), computed from the events and connection records
the monitor already has. A stage of the pipeline: the dispatch feeds it each batch (events(), records()), the
monitor's loop calls tick() about once a second and hands the HealthWarnings it returns to the outputs.

A kind plugs in as a class in KINDS with `kind` (its name), `setting` (its Thresholds field), `alerts`,
`overflow`, tick(now_ns), and events(rows, news) and/or records(rows); with a `states` attribute (the new
states of the events it needs) its events() sees only those rows, in order (news: their new states as bytes)."""

from itertools import compress
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
# the Thresholds fields of the kinds made from events, and of those made from connection records alone
EVENT_MADE = tuple(k.setting for k in KINDS if hasattr(k, "events"))
RECORD_MADE = tuple(k.setting for k in KINDS if hasattr(k, "records") and not hasattr(k, "events"))
# the Thresholds of the kinds made from connection records alone (for a reader of records, not events: top)
RECORD_KINDS = Thresholds(**dict.fromkeys(EVENT_MADE))

__all__ = ["ACTIVE", "CLEARED", "EVENT_MADE", "Health", "KIND_NAMES", "Owner", "RECORD_KINDS", "RECORD_MADE", "Thresholds",
           "HealthWarning"]


class Health:
    """The warning kinds, fed and ticked together. said: warnings said so far, per kind (cleared ones not)."""

    def __init__(self, thresholds=Thresholds()):
        self.kinds = [k(thresholds) for k in KINDS if getattr(thresholds, k.setting) is not None]  # KIND=off
        fed = [k for k in self.kinds if hasattr(k, "events")]
        # a kind with `states` (the new states of the rows it looks at) is fed only those rows, picked once for
        # all such kinds; a kind without gets every row
        self._picky = [k.events for k in fed if hasattr(k, "states")]
        self._all = [k.events for k in fed if not hasattr(k, "states")]
        wanted = {n for k in fed if hasattr(k, "states") for n in k.states}
        self._mark = bytes(int(n in wanted) for n in range(256))  # bytes.translate: a wanted state -> 1
        self._unwanted = bytes(n for n in range(256) if n not in wanted)  # bytes.translate: deleted
        self._records = [k.records for k in self.kinds if hasattr(k, "records")]
        self._listen_drops = [k.listen_drops for k in self.kinds if hasattr(k, "listen_drops")]
        self._queue_drops = [k.queue_drops for k in self.kinds if hasattr(k, "queue_drops")]
        self.said = dict.fromkeys(KIND_NAMES, 0)

    def events(self, rows):
        """A batch of events: their new states as bytes (from the ring's bytes when the rows came straight
        from one: pipeline/rings.py's Rows; else one pass over the rows), tested at C speed."""
        news = getattr(rows, "news", None)
        if news is None or len(news) != len(rows):
            news = bytes(map(_new, rows))
        for feed in self._all:
            feed(rows, news)
        if self._picky:
            mark = news.translate(self._mark)
            if 1 in mark:
                rows, news = list(compress(rows, mark)), news.translate(None, self._unwanted)
                for feed in self._picky:
                    feed(rows, news)

    def records(self, rows):
        for feed in self._records:
            feed(rows)

    def listen_drops(self, table, now_ns):
        """The kernel's counts of listeners' accept queue overflows (kernel/loader.py: Probe.listen_drops)."""
        for feed in self._listen_drops:
            feed(table, now_ns)

    def wants_queues(self):
        """Whether a kind reads the listeners' queues (queue_drops): the monitor reads them only then."""
        return bool(self._queue_drops)

    def queue_drops(self, table, skipped, now_ns):
        """The listeners given drops of their namespace's ListenOverflows this tick (pipeline/listen_queues.py)."""
        for feed in self._queue_drops:
            feed(table, skipped, now_ns)

    def tick(self, now_ns):
        """The warnings of this tick (now_ns: CLOCK_MONOTONIC, the events' clock), of every kind."""
        out = []
        for k in self.kinds:
            out += k.tick(now_ns)
        for w in out:
            if w.status == ACTIVE:
                self.said[w.kind] += 1
        return out

    def active(self):
        """The warnings in force now, of every kind: (kind, Owner or None, fields), as last said."""
        return [(k.kind, state[2], state[3]) for k in self.kinds for state in k.alerts.active.values()]

    def overflow(self):
        """Per kind: what was not followed because the kind's keys were full (MAX_KEYS)."""
        return {k.kind: k.overflow + k.alerts.overflow for k in self.kinds}
