"""The command line: bad input is one clear line and a non-zero exit, never a traceback."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from socketsnoop.commands import report, service
from socketsnoop.commands.options import build_parser, filters_from, parse_size
from socketsnoop.errors import SnoopError

from support.system import unprivileged_command


def run(*args, user=None):
    cmd = [sys.executable, "-m", "socketsnoop", *args]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    if user:
        unprivileged = unprivileged_command(user)
        if not unprivileged:
            pytest.skip("needs setpriv and a Python that an unprivileged user can run")
        prefix, env = unprivileged
        cmd = [*prefix, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env, cwd="/")


@pytest.mark.parametrize("args,needle", [
    (["--port", "70000"], "--port"),
    (["--addr", "10.0.0.300/8"], "--addr"),
    (["--state", "NOPE"], "--state"),
    (["--pid", "abc"], "--pid"),
    (["--src-port", "-1"], "--src-port"),
    (["--comm", "x" * 20], "--comm"),
    (["--buffer-size", "lots"], "--buffer-size"),
    (["--duration", "-3"], "--duration"),
    (["-4", "-6"], "-4/--ipv4"),
    (["--bogus"], "unrecognized arguments"),
    (["--format", "xml"], "--format"),
])
def test_bad_values_one_line_exit_2(args, needle):
    p = run(*args, "--no-log-file")
    assert p.returncode == 2, p
    assert p.stderr.count("\n") == 1 and needle in p.stderr and "Traceback" not in p.stderr, p.stderr


def test_help_ends_with_examples():
    p = run("--help")
    assert p.returncode == 0
    assert "examples:" in p.stdout and p.stdout.rstrip().splitlines()[-1].strip().startswith("socket-snoop")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop privileges")
def test_not_root_is_one_line():
    p = run("--no-log-file", user=65534)
    assert p.returncode == 1
    assert p.stderr.strip().count("\n") == 0 and "needs root" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="root writes anywhere else")
def test_log_file_not_writable_is_one_line(tmp_path):
    p = run("--log-file", "/proc/version")
    assert p.returncode == 1 and "cannot write the log file /proc/version" in p.stderr
    assert "Traceback" not in p.stderr and p.stderr.strip().count("\n") == 0


def test_filters_are_or_within_and_across():
    opts = build_parser().parse_args(["-P", "22", "-P", "443", "--dst", "10.0.0.0/8", "-s", "established",
                                      "-c", "sshd", "--no-log-file"])
    f = filters_from(opts)
    assert f.ports == {22, 443} and f.states == {1} and f.comms == {b"sshd"}
    keys = list(f.map_entries())
    assert len([k for k in keys if k[0] == "filter_ports"]) == 2
    assert [k for k in keys if k[0] == "filter_addrs"][0][1][:4] == (16 + 8).to_bytes(4, "little")


def test_ipv4_mapped_cidr_becomes_ipv4():
    opts = build_parser().parse_args(["--src", "::ffff:10.0.0.0/104", "--no-log-file"])
    assert str(filters_from(opts).srcs[0]) == "10.0.0.0/8"


def test_sizes():
    assert parse_size("8M") == 8 << 20 and parse_size("512k") == 512 << 10
    with pytest.raises(SnoopError):
        parse_size("1K")


def test_every_long_option_is_in_the_readme():
    """Every option --help shows (the monitor's, report's, service's) is documented in the README (the health
    warnings' in docs/warnings.md, which the README points to)."""
    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text() + (root / "docs" / "warnings.md").read_text()
    missing = [(p.prog, o) for p in (build_parser(), report.build_parser(), service.build_parser())
               for a in p._actions for o in a.option_strings if o.startswith("--") and o not in readme]
    assert not missing
