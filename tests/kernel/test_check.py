"""`socket-snoop check`: one line per need, a verdict, exit 0/1; unprivileged it says what is missing."""

import os
import subprocess
import sys

import pytest
from socketsnoop.commands import check

from support.system import unprivileged_command

ENV = dict(os.environ)



def run_check(*prefix, python=sys.executable, args=()):
    return subprocess.run([*prefix, python, "-m", "socketsnoop", "check", *args], capture_output=True, text=True,
                          env=ENV, timeout=120, cwd="/")


@pytest.mark.bpf
def test_check_as_root_passes_and_loads():
    r = run_check()
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert out.rstrip().splitlines()[-1] == "verdict: socket-snoop can run here"
    for what in ("kernel", "BTF", "capabilities", "libbpf", "tracepoint sock:inet_sock_set_state",
                 "tracepoint tcp:tcp_retransmit_skb", "BPF ring buffer", "log file", "load BPF program"):
        assert any(line.startswith("ok") and f" {what}: " in line for line in out.splitlines()), what
    assert "MISSING" not in out and r.stderr == ""


@pytest.mark.bpf
def test_check_verdict_is_what_the_monitor_does():
    """On every kernel (the matrix runs this too): check's verdict is the monitor's fate, and its line on
    resets is what the monitor warns about, or not."""
    r = run_check()
    m = subprocess.run([sys.executable, "-m", "socketsnoop", "--no-log-file", "--duration", "1", "-q"],
                       capture_output=True, text=True, env=ENV, timeout=120, cwd="/")
    assert (r.returncode == 0) == (m.returncode == 0), r.stdout + m.stderr
    assert (r.returncode == 0) == ("Monitoring socket connections..." in m.stderr), r.stdout + m.stderr
    resets = [line for line in r.stdout.splitlines() if " resets sent: " in line]
    assert len(resets) == 1, r.stdout
    assert resets[0].startswith("ok ") == ("warning: resets sent" not in m.stderr), resets[0] + m.stderr
    kernel = next(line for line in r.stdout.splitlines() if " kernel: " in line)
    assert kernel.startswith("ok ") or r.returncode == 1, r.stdout


def test_kernel_floors_name_what_is_missing():
    r = check.check_kernel("ringbuf", "5.4.0-150-generic")
    assert not r.ok and r.line() == ("MISSING  kernel: 5.4.0-150-generic: tracepoint programs with BTF arguments "
                                     "(tp_btf) need 5.5; BPF ring buffer needs 5.8 (--buffer perf: 5.5)")
    r = check.check_kernel("ringbuf", "5.7.1")
    assert not r.ok and r.detail == "5.7.1: BPF ring buffer needs 5.8 (--buffer perf: 5.5)"
    r = check.check_kernel("perf", "5.4.0-150-generic")
    assert not r.ok and "tp_btf" in r.detail and "5.5" in r.detail
    assert check.check_kernel("perf", "5.6.0").ok and not check.check_kernel("ringbuf", "5.6.0").ok
    assert check.check_kernel("ringbuf", "5.10.0-46-amd64").ok


def test_check_unprivileged_says_what_is_missing():
    if os.geteuid() == 0:
        unprivileged = unprivileged_command()  # wherever the checkout is (a home directory of mode 0700)
        if not unprivileged:
            pytest.skip("needs setpriv and a Python that an unprivileged user can run")
        prefix, env = unprivileged
        r = subprocess.run([*prefix, "check"], capture_output=True, text=True, env=env, timeout=120, cwd="/")
    else:
        r = run_check()
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    lines = r.stdout.splitlines()
    assert any(line.startswith("MISSING  capabilities: ") and "run as root" in line for line in lines)
    assert lines[-1].startswith("verdict: socket-snoop cannot run here: capabilities")
    assert not any("load BPF program" in line for line in lines)  # not attempted without privileges


def test_check_bad_config_is_a_missing_line(tmp_path):
    bad = tmp_path / "c.toml"
    bad.write_text("no-such-option = 1\n")
    r = run_check(args=("--config", str(bad)))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert any(line.startswith("MISSING  config file: ") and "line 1: no-such-option" in line
               for line in r.stdout.splitlines())


def test_check_bad_usage():
    r = run_check(args=("--frobnicate",))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


def test_tracepoint_lookup_in_btf_bytes():
    btf = b"\0btf_trace_inet_sock_set_state\0btf_trace_tcp_send_reset\0"
    assert check.check_tracepoint("sock:inet_sock_set_state", btf, True).ok
    r = check.check_tracepoint("tcp:tcp_receive_reset", btf, False)
    assert not r.ok and r.line().startswith("missing ") and "optional" in r.detail
    r = check.check_tracepoint("tcp:tcp_retransmit_skb", None, True)
    assert not r.ok and r.line().startswith("MISSING")


def test_kernel_version_and_log_checks(tmp_path):
    assert check.kernel_version("6.18.44-fc-v657") == (6, 18)
    assert check.kernel_version("5.4.0-150-generic") < check.MIN_KERNEL
    assert check.kernel_version("junk") == (0, 0)
    assert check.check_log(None).ok
    assert check.check_log(str(tmp_path / "x.log")).ok
    r = check.check_log(str(tmp_path / "missing-dir" / "x.log"))
    assert not r.ok and "does not exist" in r.detail


def test_log_check_refuses_what_the_monitor_refuses(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    r = check.check_log(str(shared / "x.log"))
    assert not r.ok and "not safe" in r.detail and "writable by anyone" in r.detail
    os.chmod(shared, 0o1777)
    if os.geteuid() == 0:  # sticky and root's
        assert check.check_log(str(shared / "x.log")).ok
    os.chmod(shared, 0o755)
    (shared / "x.log").symlink_to(tmp_path / "target")
    r = check.check_log(str(shared / "x.log"))
    assert not r.ok and "not a regular file" in r.detail
