"""The monitor's parts, made from its options: the formatters, the outputs and the path to them (output/),
the connections report, the warnings' thresholds, and the kernel side (kernel/loader.py's Probe) loaded and
attached with the owners of sockets older than the monitor (pipeline/). The loop that runs them is
commands/run/__init__.py's."""

from ...kernel.loader import Probe
from ...logformat.base import Clock
from ...output import exit_summary
from ...kernel.abi import FILT_COMM, FILT_PID, FILT_UID, FILT_X_COMM, FILT_X_PID, FILT_X_UID, KM_EVENTS, KM_RECORDS
from ...output.build import formatters, metrics_module, open_sinks
from ...output.colour import warning_painter, wants_colour
from ...output.connections import ConnectionReport
from ...output.dispatch import Dispatch
from ...output.exit_summary import say
from ...pipeline.enrich import ProcOwnerEnricher
from ...pipeline.filter_cgroups import CgroupWatch
from ...pipeline.filters import CGROUP_KINDS
from ...pipeline.health import Health
from ...pipeline.listen_queues import ListenQueues
from ...pipeline.owners import ProcOwners
from ...pipeline.rings import RingReader
from ...settings.monitor import metrics_from
from ...settings.warnings import thresholds_from


class MonitorParts:
    """What the monitor is made of; bench/churn's replay makes them too (Monitor(opts, filters), open_sinks(),
    then out.events(...)), without a kernel side."""

    def __init__(self, opts, filters):
        self.opts, self.filters, self.clock = opts, filters, Clock()
        self.warn = warning_painter(say) if wants_colour(opts.color, 2) else say  # stderr's warnings
        self.metrics = metrics_from(opts)  # (address, port, labels) or None; a usage error before anything runs
        self.cgroups, self.identity, self.text, self.formatter = formatters(opts, filters, self.clock, self.warn,
                                                                            self.metrics)
        # the exit report keeps the kernel's connection records (one per connection), not every event
        self.report = None if opts.no_report else ConnectionReport(max_conns=opts.max_tracked)
        self.owners, self.enrichers, self.sinks = ProcOwners(), [], []
        self.probe = self.out = self.cgroup_watch = self.queues = None  # cgroup_watch: the cgroup filters' names, looked for again
        self.rings = RingReader(perf=opts.buffer == "perf")
        self.thresholds = thresholds_from(opts)  # None: --no-warnings
        self.in_kernel = counts_in_kernel(opts, filters, self.metrics, self.report, self.thresholds)

    def open_sinks(self):
        """The outputs, and self.out: the path from decoded rows to them (bench/churn's replay uses it too)."""
        lost = lambda: exit_summary.lost_counts(self.probe, self.sinks)  # noqa: E731 (for --metrics)
        kernel = (lambda: self.probe.metric_counts() if self.probe else None) if self.in_kernel else None  # noqa: E731
        self.sinks = open_sinks(self.opts, self.clock, self.metrics, lost, self.warn, self.identity, kernel,
                                bool(self.in_kernel & KM_RECORDS))
        self.out = Dispatch(self.formatter, self.sinks, self.enrichers, self.report, not self.opts.no_summary)
        if self.thresholds is not None:
            health = Health(self.thresholds)
            self.out.watch(health, self.text)
            if health.wants_queues():  # the namespaces' ListenOverflows and their listeners' queues
                self.queues = ListenQueues(warn=self.warn)

    def make_probe(self):
        """The kernel side as the options ask for it (not loaded yet)."""
        o = self.opts
        # (the health warnings' record kinds are off when nothing else wants the records: settings/warnings.py)
        records = not o.no_summary or self.report is not None or bool(self.metrics)
        self.probe = Probe(self.filters, buffer=o.buffer, buffer_size=o.buffer_size, log=self.warn, records=records,
                           summary_only=o.summary_only, want_cgroup=self.identity is not None,
                           kernel_metrics=self.in_kernel,
                           metric_bounds=metrics_module().kernel_bounds() if self.in_kernel else None,
                           drop_events=o.drops)
        return self.probe

    def start(self, p):
        """The probe loaded, its listeners seeded (every network namespace's: accepted connections get their
        owner), the owners of sockets older than us found in /proc, attached, its rings read."""
        p.load()
        if self.filters.wants_cgroups():
            self.cgroup_watch = CgroupWatch(self.filters, self.cgroups, p, CGROUP_KINDS, warn=self.warn)
        self.owners.scan()
        for ns, listeners in self.owners.listeners_by_netns().items():
            p.seed_listeners(listeners, ns)
        self.enrichers.append(ProcOwnerEnricher(self.owners, p, self.filters))
        p.attach()
        p.open_reader(on_sample=self.rings.on_sample)
        self.rings.bind(p)


OWNER_FILTERS = FILT_PID | FILT_COMM | FILT_UID | FILT_X_PID | FILT_X_COMM | FILT_X_UID


def counts_in_kernel(opts, filters, metrics, report, thresholds):
    """Counting without transfer: what the kernel counts itself and keeps (bpf/metrics.h, abi.KM_*), 0 for
    nothing. The events, when the metrics endpoint is the only output and nothing else wants them in user
    space: no lines anywhere (-q, --no-log-file, no --journal, --syslog or --drops), no health warnings, no
    --metrics-labels (comm, unit and container are found in user space: the owner of a socket older than
    the monitor in /proc, unit and container in the cgroup tree), no owner filter (-p, -c, --uid and their
    --exclude-: a socket older than the monitor has its owner checked in /proc), the ring buffer (the perf
    buffer carries no records). The connection records too when the exit report does not want them
    (--no-report)."""
    if not (metrics and not metrics[2] and opts.quiet and not opts.log_file and not opts.journal
            and not opts.journal_socket and not opts.syslog and not opts.drops and thresholds is None and opts.buffer != "perf"
            and not filters.flags() & OWNER_FILTERS):
        return 0
    return KM_EVENTS | (KM_RECORDS if report is None else 0)
