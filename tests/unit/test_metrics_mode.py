"""Counting without transfer is chosen only where nothing but the metrics endpoint wants the events: any
output of lines, the health warnings, --metrics-labels, an owner filter or the perf buffer keeps the events
crossing to user space, and the exit report the connection records (commands/run/parts.py:
counts_in_kernel)."""

import pytest
from socketsnoop.commands.run.parts import MonitorParts, counts_in_kernel
from socketsnoop.kernel.abi import KM_EVENTS, KM_RECORDS
from socketsnoop.output.metrics import MetricsSink, kernel_bounds
from socketsnoop.settings.monitor import filters_from, monitor_options

ONLY = ["--metrics", "9100", "-q", "--no-log-file", "--no-report", "--no-warnings"]


def chosen(*extra):
    base = [a for a in ONLY if a != "--no-log-file"] if "--log-file" in extra else ONLY
    opts = monitor_options([*base, *extra])
    parts = MonitorParts(opts, filters_from(opts))
    assert parts.in_kernel == counts_in_kernel(opts, parts.filters, parts.metrics, parts.report, parts.thresholds)
    return parts.in_kernel


def test_metrics_alone_count_in_the_kernel():
    assert chosen() == KM_EVENTS | KM_RECORDS
    assert chosen("-P", "80", "-a", "10.0.0.1", "--failed")  # the kernel applies these filters itself


@pytest.mark.parametrize("extra", [
    ["--log-file", "/tmp/x.log"], ["--journal"], ["--syslog", "udp://127.0.0.1:514"], ["--drops"],
    ["--metrics-labels", "comm"], ["-p", "1"], ["-c", "curl"], ["--exclude-comm", "curl"], ["--uid", "0"],
    ["--buffer", "perf"],
])
def test_anything_else_that_wants_the_events_keeps_them_crossing(extra):
    assert not chosen(*extra)


def test_the_health_warnings_keep_the_events_crossing():
    opts = monitor_options([a for a in ONLY if a != "--no-warnings"])  # they are on by default
    assert not MonitorParts(opts, filters_from(opts)).in_kernel


def test_the_report_keeps_the_records_crossing():
    opts = monitor_options(["--metrics", "9100", "-q", "--no-log-file", "--no-warnings"])
    assert MonitorParts(opts, filters_from(opts)).in_kernel == KM_EVENTS


def test_the_kernel_gets_the_sinks_buckets():
    sink = MetricsSink()
    assert kernel_bounds() == [sink.duration.bounds, sink.handshake.bounds, sink.rtt.bounds]
    assert kernel_bounds()[0][0] == 1_000_000 and kernel_bounds()[2][0] == 50  # ns, ns, us
