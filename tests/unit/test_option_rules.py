"""The rules every option follows, declared once in settings/: an option that needs another is refused without it
(on the command line and in the config file), every option that takes seconds has one type, a mistyped option
gets the suggestion it begins, each command's errors name it, and a config file nested too deeply is one line."""

import os
import subprocess
import sys

import pytest
from socketsnoop import cli
from socketsnoop.commands import report, top
from socketsnoop.settings import docs
from socketsnoop.settings.monitor import MONITOR_OPTIONS, build_parser, monitor_options, options_from_config
from socketsnoop.settings.warnings import parse_warn
from socketsnoop.errors import SnoopError


# refused once parsed (the console's format with no console): the monitor never starts, whatever the rule tested
NEVER_RUNS = ["-q", "--format", "compact"]


def refused(argv, capsys):
    """(status, stderr) of cli.main for argv that must be refused before anything runs."""
    try:
        status = cli.main(argv)
    except SystemExit as e:
        status = e.code
    return status, capsys.readouterr().err


def write(tmp_path, text):
    path = tmp_path / "c.toml"
    path.write_text(text)
    return str(path)


# -- a config file nested too deeply --------------------------------------------------------------------------

@pytest.mark.parametrize("command,status", [([], 2), (["config"], 2), (["check"], 1)])
def test_a_config_file_nested_too_deeply_is_one_line(tmp_path, command, status):
    path = write(tmp_path, "a=" + "[" * 100_000 + "]" * 100_000 + "\n")
    r = subprocess.run([sys.executable, "-m", "socketsnoop", *command, "--config", path], capture_output=True,
                       text=True, timeout=120, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)), cwd="/")
    want = f"config file {path}: refused: arrays or tables nested too deeply"
    assert r.returncode == status and "Traceback" not in r.stderr, r.stderr[-500:]
    if command == ["check"]:  # check says it as the config file's line, then its verdict
        assert f"MISSING  config file: {want}" in r.stdout.splitlines() or \
            f"MISSING  config file: socket-snoop: {want}" in r.stdout.splitlines(), r.stdout
    else:
        assert r.stderr == f"socket-snoop: {want}\n"


# -- options that need another --------------------------------------------------------------------------------

NEEDS = [  # (the option, the refusal, what it needs on the command line, and in the config file)
    (["--syslog-ca", "/etc/ca.pem"], "--syslog-ca needs --syslog URL", ["--syslog", "tls://192.0.2.1:6514"],
     'syslog = "tls://192.0.2.1:6514"'),
    (["--syslog-facility", "local3"], "--syslog-facility needs --syslog URL", ["--syslog", "udp://192.0.2.1:514"],
     'syslog = "udp://192.0.2.1:514"'),
    (["--metrics-labels", "comm"], "--metrics-labels needs --metrics [ADDR:]PORT", ["--metrics", "9100"],
     "metrics = 9100"),
    (["--metrics-label-limit", "5"], "--metrics-label-limit needs --metrics-labels LIST",  # the labels' default cap
     ["--metrics-labels", "comm", "--metrics", "9100"], 'metrics-labels = "comm"\nmetrics = "9100"'),
]


def test_the_options_that_need_another_are_declared_so():
    needs = {o.long_flags[0]: o.needs for o in MONITOR_OPTIONS if o.needs}
    assert needs == {"--syslog-ca": "--syslog", "--syslog-facility": "--syslog", "--metrics-labels": "--metrics",
                     "--metrics-label-limit": "--metrics-labels"}
    parser = build_parser()
    assert all(parser.declared[o] for o in needs.values())
    shown = " ".join(parser.format_help().split())
    for wanted in needs.values():  # --help, the man page and the example config say it
        assert f"(needs {wanted})" in shown and f"(needs {wanted})" in docs.man_page().replace("\\-", "-")
    assert "(needs --syslog)" in docs.example()


@pytest.mark.parametrize("args,message,parent,_file", NEEDS)
def test_an_option_without_the_one_it_needs_is_refused(args, message, parent, _file, capsys):
    assert refused([*args, "--config", os.devnull, *NEVER_RUNS], capsys) == (2, f"socket-snoop: {message}\n")
    assert refused(["config", *args, "--config", os.devnull], capsys) == (2, f"socket-snoop config: {message}\n")
    monitor_options([*args, *parent, "--config", os.devnull])  # with it: taken


@pytest.mark.parametrize("args,message,parent,parent_file", NEEDS)
def test_a_config_key_without_the_one_it_needs_is_refused(tmp_path, args, message, parent, parent_file, capsys):
    key, value = args[0][2:], args[1]
    path = write(tmp_path, f'json = true\n{key.replace("-", "_")} = "{value}"\n')
    wanted = parent[0]
    status, err = refused(["--config", path, *NEVER_RUNS], capsys)
    assert status == 2 and err == (f"socket-snoop: config file {path}, line 2: {key.replace('-', '_')}: needs "
                                   f"{wanted[2:]} (in this file, or {message.split(' needs ')[1]}), which is not "
                                   "set\n"), err
    monitor_options(["--config", path, *parent])  # what it needs on the command line
    options_from_config(write(tmp_path, f'{key} = "{value}"\n{parent_file}\n'))  # or in the file


def test_an_empty_list_needs_nothing_and_the_effective_config_reads_back(tmp_path):
    options_from_config(write(tmp_path, "metrics-labels = []\n"))
    text = docs.effective(options_from_config(os.devnull))
    assert "# syslog-facility: needs syslog" in text and "# metrics-label-limit: needs metrics" in text
    assert docs.effective(options_from_config(write(tmp_path, text))) == text


# -- seconds ----------------------------------------------------------------------------------------------------

BAD_SECONDS = ["0", "-1", "nan", "inf", "1e-300", "1e-9", "0.0005", "x", ""]


def _top(argv):
    return top.build_parser().parse_args(argv[:2])


def _report(argv):
    return report.build_parser().parse_args([*argv[:2], "x.log"])


@pytest.mark.parametrize("parse,flag,floor,most,good", [
    (monitor_options, "--stats", "0.1", "1000000000", ["0.1", "0.5", "2.5", "10", "86400"]),
    (monitor_options, "--duration", "0.001", "1000000000", ["0.001", "0.5", "1", "7", "60", "120", "1e6"]),
    (_top, "--interval", "0.1", "3600", ["0.1", "0.2", "1", "3", "12", "3600"]),
    (_report, "--interval", "0.1", "86400", ["0.1", "0.2", "1", "10", "86400"]),
])
def test_every_option_of_seconds_refuses_what_is_not_a_time(parse, flag, floor, most, good):
    prog = {_top: "socket-snoop top", _report: "socket-snoop report"}.get(parse, "socket-snoop")
    for value in BAD_SECONDS:
        with pytest.raises(SnoopError) as e:
            parse([flag, value, "--config", os.devnull])
        assert (e.value.status, str(e.value)) == (2, f"{prog}: {flag}: invalid value {value!r}: seconds, from "
                                                     f"{floor} to {most}")
    for value in good:  # the values in use (README, tests) stay valid
        assert getattr(parse([flag, value, "--config", os.devnull]), flag[2:]) == float(value)


@pytest.mark.parametrize("kind,floor,good", [("close-wait-leak", "0.001", ["0.5", "1", "3", "120"]),
                                             ("interval", "0.1", ["0.1", "1", "2", "60"])])
def test_warning_times_are_seconds_too(kind, floor, good):
    for value in ["0", "-1", "nan", "inf", "1e-300"]:
        with pytest.raises(SnoopError) as e:
            parse_warn(f"{kind}={value}")
        assert str(e.value) == (f"socket-snoop: --warn {kind}: invalid value {value!r}: seconds, from {floor} to "
                                "1000000000")
    for value in good:
        assert parse_warn(f"{kind}={value}")[1] == float(value)


# -- suggestions and the command's name ------------------------------------------------------------------------

@pytest.mark.parametrize("argv,want", [
    (["--dur", "5"], "socket-snoop: unrecognized arguments: --dur; did you mean --duration?"),
    (["config", "--exa"], "socket-snoop config: unrecognized arguments: --exa; did you mean --example?"),
    (["config", "--dur", "5"], "socket-snoop config: unrecognized arguments: --dur; did you mean --duration?"),
    (["config", "--json", "--format", "text"], "socket-snoop config: --json and --format text conflict"),
    (["config", "--port", "70000"], "socket-snoop config: --port: invalid value '70000'"),
    (["top", "--count", "0"], "socket-snoop top: --count: invalid value '0'"),
    (["top", "--interval", "0.01", "--buffer-size", "1"],  # refused after it too: top never starts
     "socket-snoop top: --interval: invalid value '0.01': seconds, from 0.1 to 3600"),
    (["report", os.devnull, "--port", "70000"], "socket-snoop report: --port: invalid value '70000'"),
])
def test_a_begun_option_is_suggested_and_errors_name_the_command(argv, want, capsys):
    status, err = refused(argv, capsys)
    assert status == 2 and err.startswith(want) and err.count("\n") == 1, err
