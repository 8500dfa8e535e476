"""socket-snoop runs on x86-64 only (its BPF object is built for it, and the ring buffer reader relies on its
memory ordering): on any other machine the monitor and `check` refuse it in one line."""

import platform

import pytest
from socketsnoop import cli
from socketsnoop.commands import check

REFUSAL = ("this machine is aarch64: socket-snoop runs on x86_64 only (its BPF program is built for x86-64, "
           "and its ring buffer reader relies on x86-64 memory ordering)")


@pytest.fixture
def arm64(monkeypatch):
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")


def test_the_monitor_refuses_another_architecture(arm64, capsys):
    status = cli.main(["--no-log-file", "--duration", "1", "-q"])
    out, err = capsys.readouterr()
    assert status == 1
    assert err == f"socket-snoop: {REFUSAL}\n" and out == ""


def test_check_refuses_another_architecture(arm64, capsys):
    status = cli.main(["check"])
    lines = capsys.readouterr().out.splitlines()
    assert status == 1
    assert lines[0] == f"MISSING  architecture: {REFUSAL}"
    assert lines[-1].startswith("verdict: socket-snoop cannot run here: architecture")
    assert not any(" load BPF program: " in line for line in lines)  # never tried


def test_x86_64_passes(monkeypatch):
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    assert check.check_architecture().line() == "ok       architecture: x86_64"
