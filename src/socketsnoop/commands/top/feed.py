"""top's kernel side: a BPF program of its own (kernel.loader.Probe: each loads its own object, so top runs
beside the monitor or its service), with the monitor's filters and a state filter of top's, its rings read
into a tally.Tally.

The kernel sends top, of all the events, only the state changes that open a connection (SYN_SENT: a
connect; SYN_RECV: an accepted connection), about 2 of a connection's 10: what `active` and `opened` need.
Everything else comes from the connection records, one per connection at its end.
"""

import time

from ...kernel.abi import C_LOST, C_RECORDS_LOST, C_SEEN, RECORD, RECORD_RECORD
from ...kernel.loader import Probe, preflight
from ...pipeline.decode import R_SK
from ...pipeline.enrich import ProcOwnerEnricher
from ...pipeline.filters import Filters
from ...pipeline.health import RECORD_KINDS, Health
from ...pipeline.identity import CgroupTree, Identity
from ...pipeline.owners import ProcOwners
from ...pipeline.rings import READ_BYTES, caught_up
from .tally import OPEN_STATES, Tally

DRAIN_S = 0.25  # longest stretch of reading before the loop looks at the keys and the clock


def top_filters(filters):
    """The monitor's filters, with top's own on events: the opening states, no retransmission or reset
    events (the records count those). The filters on owners, addresses, ports and cgroups stay as given:
    the kernel applies them to events and records alike."""
    include = dict(filters.include, state=set(OPEN_STATES))
    return Filters(include, filters.exclude, dict(filters.switches, no_retransmits=True, no_resets=True))


class Feed:
    """The probe, read into a Tally. open() loads and attaches; drain() reads what the rings hold."""

    def __init__(self, filters, buffer_size, warn):
        self.filters = top_filters(filters)
        self.buffer_size = buffer_size
        self.warn = warn
        self.cgroups = CgroupTree()
        self.identity = Identity(self.cgroups, warn=warn)  # without cgroup v2: user names, no unit or container
        self.owners = ProcOwners()
        self.tally = Tally()
        self.health = Health(RECORD_KINDS)  # the warnings the records make (no other events reach top)
        self.probe = None
        self.enricher = None

    def open(self):
        preflight()
        self.filters.resolve_cgroups(self.cgroups)  # a unit, container or cgroup that is not there: exit 2
        self.probe = Probe(self.filters, buffer_size=self.buffer_size, log=self.warn, records=True,
                           want_cgroup=True)
        self.probe.load()
        self.owners.scan()
        for ns, listeners in self.owners.listeners_by_netns().items():  # accepted connections get their owner
            self.probe.seed_listeners(listeners, ns)
        self.enricher = ProcOwnerEnricher(self.owners, self.probe, self.filters)
        self.probe.attach()
        self.probe.open_reader()
        return self

    def wait(self, timeout):
        """Until the events ring wakes us, or timeout seconds."""
        reader = self.probe.reader
        if reader.pending() < self.probe.wakeup_bytes:
            reader.wait(timeout)

    def drain(self, until_empty=False):
        """What the rings hold, for about DRAIN_S at most (until they are empty: until_empty)."""
        p, tally = self.probe, self.tally
        deadline = time.monotonic() + DRAIN_S
        while True:
            found = False
            for reader in (p.reader, p.spare_reader):
                blob = reader.read(READ_BYTES)
                if blob:
                    found = True
                    rows = list(RECORD.iter_unpack(blob))
                    which = self.enricher.pick(rows)
                    if which:
                        self.enricher.enrich(rows, sorted(which))
                        rows = [r for r in rows if r is not None]
                    tally.opens(rows)
            for reader in (p.record_reader, p.record_spare_reader):
                blob = reader.read(READ_BYTES)
                if blob:
                    found = True
                    rows = list(RECORD_RECORD.iter_unpack(blob))
                    kept = self.enricher.enrich_records(rows)
                    if len(kept) != len(rows):
                        tally.forget({r[R_SK] for r in rows} - {r[R_SK] for r in kept})
                    tally.records(kept)
                    self.health.records(kept)
            if not found or (not until_empty and (time.monotonic() >= deadline or caught_up(
                    p.reader, p.spare_reader, p.record_reader, p.record_spare_reader))):
                return

    def warnings(self, now_ns):
        """The health warnings in force after a check at now_ns (CLOCK_MONOTONIC)."""
        self.health.tick(now_ns)
        return tuple(self.health.active())

    def losses(self):
        """(events seen by the kernel, lost, missed) so far: lost counts events and records the rings had no
        room for; missed, the hits the kernel did not run our programs for."""
        c = self.probe.counters()
        return c[C_SEEN], c[C_LOST] + c[C_RECORDS_LOST], self.probe.missed(c)

    def close(self):
        if self.probe is not None:
            self.probe.close()
