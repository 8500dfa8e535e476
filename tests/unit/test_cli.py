"""The command line: bad input is one clear line and a non-zero exit, never a traceback."""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
from socketsnoop.commands import config, report, service, top
from socketsnoop.settings.monitor import RunSettings, build_parser, filters_from, monitor_options
from socketsnoop.settings.values import parse_size
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
    (["--priority-boost", "21"], "--priority-boost"),
    (["--priority-boost", "-1"], "--priority-boost"),
    (["--priority-boost", "high"], "--priority-boost"),
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
    assert f.include["port"] == {22, 443} and f.include["state"] == {1} and f.include["comm"] == {b"sshd"}
    keys = list(f.map_entries())
    assert len([k for k in keys if k[0] == "filter_ports"]) == 2  # 22 and 443: two words of the bitmap
    assert [k for k in keys if k[0] == "filter_addrs"][0][1][:4] == (16 + 8).to_bytes(4, "little")


def test_ipv4_mapped_cidr_becomes_ipv4():
    opts = build_parser().parse_args(["--src", "::ffff:10.0.0.0/104", "--no-log-file"])
    assert [str(n) for n in filters_from(opts).include["src"]] == ["10.0.0.0/8"]


def test_sizes():
    assert parse_size("8M") == 8 << 20 and parse_size("512k") == 512 << 10
    with pytest.raises(SnoopError):
        parse_size("1K")


def test_every_long_option_is_in_the_readme():
    """Every option --help shows (the monitor's, report's, service's, top's, config's) is documented in the
    README."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    parsers = (build_parser(), report.build_parser(), service.build_parser(), top.build_parser(),
               config.build_parser())
    missing = [(p.prog, o) for p in parsers
               for a in p._actions for o in a.option_strings if o.startswith("--") and o not in readme]
    assert not missing


# -- a conventional command line (issue 20.7) ------------------------------------------------------
def test_commands_in_usage_and_help():
    p = run("--help")
    usage = p.stdout.split("\n\n", 1)[0]
    for name in ("check", "service", "report"):
        assert name in usage, usage
        assert any(line.split()[:1] == [name] for line in p.stdout.splitlines()), name  # listed with its help


@pytest.mark.parametrize("args, needle", [
    (["chek"], "did you mean check?"),
    (["--prot", "80"], "did you mean --port?"),
    (["--exclude-prot", "80"], "did you mean --exclude-port?"),
    (["report", "f", "--sinse", "x"], "did you mean --since?"),
    (["service", "instal"], "did you mean install?"),
])
def test_a_mistyped_command_or_option_gets_a_suggestion(args, needle):
    p = run(*args)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and needle in p.stderr, p.stderr


@pytest.mark.parametrize("args", [["--por", "80"], ["--no-log", "-P", "1"], ["--js"], ["report", "f", "--no-life"]])
def test_no_abbreviations(args):
    p = run(*args)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "unrecognized arguments" in p.stderr, p.stderr


@pytest.mark.parametrize("args, needle", [
    (["--json", "--format", "text"], "--json and --format text conflict"),
    (["--format", "text", "--json"], "--format text and --json conflict"),
    (["--log-file", "/x.log", "--no-log-file"], "--log-file /x.log and --no-log-file conflict"),
])
def test_conflicting_options_are_refused(args, needle):
    p = run(*args)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and needle in p.stderr, p.stderr


def test_agreeing_options_are_not_a_conflict():
    opts = build_parser().parse_args(["--json", "--format", "json", "--no-log-file"])
    assert opts.format == "json" and opts.log_file is None


@pytest.mark.parametrize("args, needle", [
    (["--duration", "-5"], "--duration: invalid value '-5': seconds, from 0.001 to 1000000000"),
    (["--stats", "-1.5"], "--stats: invalid value '-1.5': seconds, from 0.1 to 1000000000"),
    (["--max-tracked", "-3"], "--max-tracked: invalid value '-3'"),
])
def test_negative_values_get_a_clear_message(args, needle):
    p = run(*args, "--no-log-file")
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and needle in p.stderr, p.stderr


def test_a_command_comes_first():
    p = run("-q", "check")
    assert p.returncode == 2 and "a command comes first" in p.stderr and p.stderr.count("\n") == 1, p.stderr


def test_settings_are_typed_and_frozen():
    s = monitor_options(["-P", "22", "--duration", "5", "--config", os.devnull])
    assert isinstance(s, RunSettings) and s.port == (22,) and s.duration == 5.0 and s.log_file is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.quiet = True
