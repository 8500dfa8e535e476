"""The config file: values through the parser's own types, command line wins, errors name file/key/line."""

import ipaddress
import os
import re
import subprocess
import sys

import pytest
from socketsnoop import cli
from socketsnoop.settings import monitor as options
from socketsnoop.settings.file import key_line, parse_with_config

GOOD = """\
# socket-snoop options
log-file = "/tmp/x.json"
json = true
port = [22, 443]
dst = ["10.0.0.0/8", "2001:db8::/32"]
include-unspecified = true
quiet = true
stats = 10
buffer-size = "16M"
max_tracked = 500
state = ["ESTABLISHED", "syn-sent"]
comm = "nginx"
"""


def write(tmp_path, text, name="config.toml"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def parse(argv, default="/nonexistent/config.toml"):
    return parse_with_config(options.build_parser(), argv, default)


def test_good_file(tmp_path):
    opts = parse(["--config", write(tmp_path, GOOD)])
    assert opts.log_file == "/tmp/x.json"
    assert opts.format == "json"
    assert opts.port == [22, 443]
    assert opts.dst == [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::/32")]
    assert opts.include_unspecified and opts.quiet
    assert opts.stats == 10.0
    assert opts.buffer_size == 16 << 20
    assert opts.max_tracked == 500
    assert opts.state == [1, 2]
    assert opts.comm == [b"nginx"]  # a single value for a list option
    options.filters_from(opts)  # builds


def test_default_file_used_when_present_and_missing_is_fine(tmp_path):
    path = write(tmp_path, 'format = "json"\nno-log-file = true\n')
    opts = parse([], default=path)
    assert opts.format == "json" and opts.log_file is None
    opts = parse([])  # no default file: the parser's defaults
    assert opts.format == "text" and opts.log_file == options.DEFAULT_LOG


def test_command_line_wins(tmp_path):
    path = write(tmp_path, GOOD)
    opts = parse(["--config", path, "-P", "80", "--format", "text", "--no-log-file", "--max-tracked", "7"])
    assert opts.port == [80]  # replaces the file's list, not added to it
    assert opts.dst == [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::/32")]
    assert opts.format == "text"
    assert opts.log_file is None
    assert opts.max_tracked == 7
    assert opts.quiet  # from the file


def test_false_switches(tmp_path):
    opts = parse(["--config", write(tmp_path, "json = false\nquiet = false\nno-log-file = false\n")])
    assert opts.format == "text" and not opts.quiet and opts.log_file == options.DEFAULT_LOG


@pytest.mark.parametrize("text, line, words", [
    ("# c\n\nquiet = true\nportz = 22\n", 4, ["portz", "unknown key (did you mean port?)"]),
    ("exclude_unti = 1\n", 1, ["exclude_unti", "unknown key (did you mean exclude-unit?)"]),
    ("quiet = \"yes\"\n", 1, ["quiet", "expected true or false"]),
    ("json = true\nport = [22, \"ssh\"]\n", 2, ["port", "'ssh'", "whole number"]),
    ("port = 70000\n", 1, ["port", "between 0 and 65535"]),
    ("\nformat = \"xml\"\n", 2, ["format", "'text', 'json'"]),
    ("log-file = 5\n", 1, ["log-file", "expected a string"]),
    ("buffer-size = \"huge\"\n", 1, ["buffer-size", "'huge'"]),
    ("stats = -1\n", 1, ["stats", "invalid value '-1'"]),
    ("dst = [\"10.0.0.0/33\"]\n", 1, ["dst", "CIDR"]),
    ("state = [\"OPEN\"]\n", 1, ["state", "known states"]),
    ("config = \"/x\"\n", 1, ["config", "unknown key"]),
    ("quiet = true\n[output]\njson = true\n", 2, ["output", "unknown key"]),
    ("max-tracked = [1, 2]\n", 1, ["max-tracked", "one value"]),
])
def test_bad_values_name_file_key_and_line(tmp_path, capsys, text, line, words):
    path = write(tmp_path, text)
    assert cli.main(["--config", path]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert f"config file {path}, line {line}: " in err
    for w in words:
        assert w in err


def test_missing_explicit_file_and_bad_toml(tmp_path, capsys):
    assert cli.main(["--config", str(tmp_path / "nope.toml")]) == 2
    assert "not found" in capsys.readouterr().err
    path = write(tmp_path, "port = [22,\n")
    assert cli.main(["--config", path]) == 2
    err = capsys.readouterr().err
    assert "not valid TOML" in err and path in err and err.count("\n") == 1


def test_key_line_scanner():
    text = 'a = 1\n  "log_file" = "x"\n[tbl]\nport.x = 1\n'
    assert key_line(text, "a") == 1
    assert key_line(text, "log_file") == 2
    assert key_line(text, "tbl") == 3
    assert key_line(text, "port") == 4
    assert key_line(text, "missing") is None


def test_no_traceback_from_the_command(tmp_path):
    path = write(tmp_path, "quiet = 3\n")
    r = subprocess.run([sys.executable, "-m", "socketsnoop", "--config", path], capture_output=True, text=True,
                       env=dict(os.environ), timeout=60)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1
    assert "line 1: quiet: expected true or false" in r.stderr


@pytest.mark.parametrize("text, words", [
    # a quoted key may hold any character: shown quoted and escaped as TOML writes it
    ('"evil\\u001b]0;PWNED\\u0007\\nkey" = 1\n', ['"evil\\u001b]0;PWNED\\u0007\\nkey": unknown key']),
    ('"\\u202ebidi" = 1\n', ['"\\u202ebidi": unknown key']),
    ('"port\\u0000" = 1\n', ['"port\\u0000": unknown key']),
    # values: through repr, whatever message carries them
    ('port = "\\u001b[2J"\n', ["line 1: port: invalid value '\\x1b[2J'"]),
    ('format = "\\u001b[2J"\n', ["line 1: format: expected one of"]),
    ('log-file = ["\\u001b"]\n', ["log-file: expected one value"]),
])
def test_keys_and_values_escaped_in_messages(tmp_path, capsys, text, words):
    path = write(tmp_path, text)
    assert cli.main(["--config", path]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert all(c.isprintable() for c in err.rstrip("\n")), err
    for w in words:
        assert w in err, err


def test_config_path_escaped_in_messages(tmp_path, capsys):
    missing = str(tmp_path / "no\x1b]0;PWNED\x07.toml")
    assert cli.main(["--config", missing]) == 2
    err = capsys.readouterr().err
    assert "no\\x1b]0;PWNED\\x07.toml: not found" in err and "\x1b" not in err
    path = write(tmp_path, "portz = 1\n", name="bad\nname.toml")
    assert cli.main(["--config", path]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad\\nname.toml, line 1: portz: unknown key" in err


def test_escape_helpers():
    from socketsnoop.settings.file import escape, show_key
    assert escape("plain text, é") == "plain text, é"
    assert escape("a\x1bb\n\u202e\udcff") == "a\\x1bb\\n\\u202e\\udcff"
    assert show_key("log-file") == "log-file" and show_key("a b") == '"a b"' and show_key('q"') == '"q\\""'


def test_every_option_of_the_monitor_is_declared_and_a_key(tmp_path, capsys):
    """Every long option in `socket-snoop --help` comes from an Option declaration (options.MONITOR_OPTIONS),
    which is what the config file converts its keys by: one added to the parser some other way would be
    missing from the file. --help, --version and --config are not keys."""
    parser = options.build_parser()
    shown = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", parser.format_help()))
    assert shown == set(parser.declared) | {"--help", "--version"}
    # 47 with the records', the metrics' and the identity's options, and --journal, --journal-socket, --syslog,
    # --syslog-facility, --syslog-ca, --output-queue, --priority-boost, --color, and the health warnings' --warn and
    # --no-warnings, and --drops
    assert len(shown) == 58
    for flag in shown:
        path = write(tmp_path, f"{flag[2:]} = {{a = 1}}\n")  # a table: no option takes one
        assert cli.main(["--config", path]) == 2
        err = capsys.readouterr().err
        assert ("unknown key" in err) == (flag in ("--help", "--version", "--config")), err


def test_parsers_of_every_command_print_one_line_errors(capsys):
    for argv, prog in ((["--bogus"], "socket-snoop"), (["check", "-x"], "socket-snoop check"),
                       (["service"], "socket-snoop service"), (["report"], "socket-snoop report"),
                       (["report", "f", "--json=1"], "socket-snoop report")):
        with pytest.raises(SystemExit) as e:
            cli.main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.count("\n") == 1 and err.startswith(f"{prog}: "), (argv, err)
        assert err.endswith(f" (see {prog} --help)\n"), err


# -- trusted only as sshd's StrictModes trusts a file (issue 19.11) -------------------------------------
def test_untrusted_paths_are_refused_in_one_line(tmp_path, capsys):
    good = write(tmp_path, "no-log-file = true\n")
    os.chmod(good, 0o644)
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    os.chmod(open_dir, 0o777)
    in_open = write(open_dir, "no-log-file = true\n")
    writable = write(tmp_path, "no-log-file = true\n", name="w.toml")
    os.chmod(writable, 0o666)
    link_in_open = open_dir / "link.toml"
    link_in_open.symlink_to(good)  # a good file, but the link can be swapped by anyone
    loop = tmp_path / "loop.toml"
    loop.symlink_to(loop)
    a_dir = tmp_path / "adir"
    a_dir.mkdir()
    for path, words in ((in_open, f"directory {open_dir} is writable by group and others (mode 0777)"),
                        (writable, "w.toml is writable by group and others (mode 0666)"),
                        (str(link_in_open), f"directory {open_dir} is writable"),
                        (str(loop), "cannot read it: Too many levels of symbolic links"),
                        (str(a_dir), "cannot read it: Is a directory")):
        assert cli.main(["--config", path, "--no-log-file"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and words in err, (path, err)
    os.chmod(open_dir, 0o1777)  # sticky, as /tmp: its entries cannot be swapped by others
    assert parse(["--config", str(link_in_open)]).log_file is None
    assert parse(["--config", good]).log_file is None
    assert parse(["--config", os.devnull]).log_file == options.DEFAULT_LOG  # no configuration at all
