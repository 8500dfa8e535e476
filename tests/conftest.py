"""Shared fixtures: a real monitor process, real traffic, and the BPF skip policy.

Tests marked `bpf` need root and a kernel that loads BPF programs. Where
that is missing they skip with the reason; with SOCKETSNOOP_REQUIRE_BPF=1
(set by .ci/run) every skip is turned into a failure.
"""

import os

import pytest

from support.system import bpf_unavailable_reason

REQUIRE_BPF = os.environ.get("SOCKETSNOOP_REQUIRE_BPF") == "1"


def pytest_collection_modifyitems(config, items):
    reason = bpf_unavailable_reason()
    if not reason:
        return
    for item in items:
        if "bpf" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=f"BPF not available: {reason}"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_BPF and report.skipped:
        report.outcome = "failed"
        report.longrepr = f"skipped, but SOCKETSNOOP_REQUIRE_BPF=1 forbids skips: {report.longrepr}"


@pytest.fixture
def monitor(tmp_path):
    """Start real monitors: monitor(args...) -> support.procs.Monitor (stopped at teardown)."""
    from support.procs import Monitor

    started = []

    def start(*args, **kw):
        m = Monitor(tmp_path, *args, **kw)
        started.append(m)
        return m.start()

    yield start
    for m in started:
        m.kill()
