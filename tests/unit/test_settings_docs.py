"""What is made from the option declarations: the effective configuration (`socket-snoop config`), the example
config file, the man page and bash completion; each checked by the program that reads it."""

import os
import shutil
import subprocess
import sys

import pytest
from socketsnoop.settings import docs
from socketsnoop.settings.monitor import GROUPS, build_parser, monitor_options, options_from_config
from socketsnoop.settings.option import CONST


def config(*args):
    return subprocess.run([sys.executable, "-m", "socketsnoop", "config", *args], capture_output=True, text=True,
                          timeout=60, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)), cwd="/")


RICH = ["--json", "-P", "443", "-P", "22", "-s", "established", "-c", "nginx", "--metrics", "[::1]:9100",
        "--metrics-labels", "comm:5", "--no-log-file", "--syslog", "tcp://[::1]:514", "--dst", "10.0.0.0/8",
        "--exclude-uid", "0", "--stats", "2.5", "--buffer-size", "8M", "--unit", "x.service", "--failed",
        "--syslog-facility", "local3", "--duration", "7"]


def test_effective_configuration_reads_back_the_same(tmp_path):
    r = config("--config", os.devnull, *RICH)
    assert r.returncode == 0, r.stderr
    path = tmp_path / "effective.toml"
    path.write_text(r.stdout)
    again = options_from_config(str(path))
    assert docs.effective(again) == r.stdout == docs.effective(monitor_options(["--config", os.devnull, *RICH]))
    assert again.port == (443, 22) and again.failed and again.summary_only and again.log_file is None
    assert "port = [443, 22]" in r.stdout and 'state = ["ESTABLISHED"]' in r.stdout and "no-log-file = true" in r.stdout


def test_effective_configuration_of_the_defaults_reads_back(tmp_path):
    r = config("--config", os.devnull)
    path = tmp_path / "c.toml"
    path.write_text(r.stdout)
    assert docs.effective(options_from_config(str(path))) == r.stdout


def test_every_key_of_the_example_config_is_valid(tmp_path):
    r = config("--example")
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stdout.splitlines() if line.startswith("#") and " = " in line and
             not line.startswith("# ")]
    keys = {line[1:].split(" = ")[0] for line in lines}
    declared = {o.key for _t, options in GROUPS for o in options if o.key}
    assert keys == declared
    by_key = {line[1:].split(" = ")[0]: line[1:] for line in lines}
    needs = {o.key: o.needs[2:] for _t, options in GROUPS for o in options if o.key and o.needs}
    for key, line in by_key.items():  # each, uncommented alone (with the keys it needs), is a config the monitor takes
        text = line + "\n"
        while key in needs:
            key = needs[key]
            text += by_key[key] + "\n"
        path = tmp_path / "one.toml"
        path.write_text(text)
        options_from_config(str(path))
    assert set(needs) == {"metrics-labels", "metrics-label-limit", "syslog-facility", "syslog-ca"}


@pytest.mark.skipif(not shutil.which("man"), reason="needs man")
def test_man_page_renders_with_every_option(tmp_path):
    r = config("--man")
    page = tmp_path / "socket-snoop.1"
    page.write_text(r.stdout)
    out = subprocess.run(["man", "--warnings", "-l", str(page)], capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, MANWIDTH="100", MANPAGER="cat", PAGER="cat"))
    assert out.returncode == 0 and not out.stderr.strip(), out.stderr
    text = out.stdout.replace("\u2010", "-").replace("\u2212", "-")
    for flag in build_parser().declared:
        assert flag in text, flag
    for name in ("check", "service", "report", "config", "EXAMPLES"):
        assert name in text


@pytest.mark.skipif(not shutil.which("bash"), reason="needs bash")
@pytest.mark.parametrize("words, expected", [
    (["--po"], {"--port"}),
    (["--format", ""], {"text", "json", "compact"}),
    (["--color", ""], {"auto", "always", "never"}),
    (["ch"], {"check"}),
    (["report", "f", "--si"], {"--since"}),
    (["-P", "22", "--exclude-u"], {"--exclude-uid", "--exclude-unit"}),
    (["--buffer", ""], {"ringbuf", "perf"}),
    (["service", "un"], {"uninstall"}),
])
def test_bash_completion(tmp_path, words, expected):
    script = tmp_path / "completion.bash"
    script.write_text(config("--bash-completion").stdout)
    line = " ".join(["socket-snoop", *(f"'{w}'" for w in words)])
    probe = (f"source {script}; COMP_WORDS=({line}); COMP_CWORD={len(words)}; _socket_snoop; "
             'printf "%s\\n" "${COMPREPLY[@]}"')
    out = subprocess.run(["bash", "--norc", "-c", probe], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and set(out.stdout.split()) == expected, (out.stdout, out.stderr)


def test_consts_are_shown_as_their_switch():
    """--no-log-file and --json are written as themselves, not as a null or the other option's value."""
    text = docs.effective(monitor_options(["--config", os.devnull, "--no-log-file", "--json"]))
    consts = [o.key for _t, options in GROUPS for o in options if o.kind == CONST]
    assert all(f"{k} = true" in text for k in consts), text
