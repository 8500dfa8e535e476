"""install.sh as an administrator runs it (root, sudo's PATH, Debian's Python under PEP 668), staged: DESTDIR for
every file outside the virtual environment and SOCKETSNOOP_PREFIX for the environment, both in a temp dir, so
the machine's /usr/local, /etc and /opt stay as they are. Then what a user does: the link runs, `man
socket-snoop` shows the page, bash completes the options, the example config is one the monitor reads; an
admin's config and the mode of its directory are never touched, and a second run is as good as the first."""

import os
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SUDO_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # Debian's sudoers secure_path

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="install.sh runs as root")


def install(dest, prefix):
    env = {"PATH": SUDO_PATH, "HOME": "/root", "DESTDIR": str(dest), "SOCKETSNOOP_PREFIX": str(prefix),
           "LANG": "C.UTF-8"}
    return subprocess.run(["sh", str(ROOT / "install.sh")], env=env, capture_output=True, text=True, timeout=600)


def test_install_sh_installs_the_command_the_man_page_completion_and_an_example_config(tmp_path):
    dest, prefix = tmp_path / "root", tmp_path / "venv"
    etc = dest / "etc" / "socket-snoop"
    etc.mkdir(parents=True, mode=0o700)
    etc.chmod(0o700)
    (etc / "config.toml").write_text("# the admin's\nport = [22]\n")
    (etc / "config.toml").chmod(0o600)
    for run in (1, 2):
        p = install(dest, prefix)
        assert p.returncode == 0, (run, p.stdout, p.stderr)
    link = dest / "usr/local/bin/socket-snoop"
    assert os.readlink(link) == str(prefix / "bin/socket-snoop")
    version = subprocess.run([str(link), "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("socket-snoop "), version

    page = dest / "usr/local/share/man/man1/socket-snoop.1"
    shown = subprocess.run(["man", "-P", "cat", "socket-snoop"], capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, MANPATH=str(dest / "usr/local/share/man"), MANWIDTH="100"))
    assert shown.returncode == 0, shown.stderr
    assert "socket-snoop - live TCP connection monitor" in shown.stdout and "--format" in shown.stdout

    completion = dest / "etc/bash_completion.d/socket-snoop"
    probe = (f"source {completion}; COMP_WORDS=(socket-snoop --form); COMP_CWORD=1; _socket_snoop; "
             'printf "%s\\n" "${COMPREPLY[@]}"; complete -p socket-snoop')
    out = subprocess.run(["bash", "--norc", "-c", probe], capture_output=True, text=True, timeout=30)
    assert out.stdout.split("\n")[:2] == ["--format", "complete -F _socket_snoop socket-snoop"], out

    example = etc / "config.toml.example"
    effective = subprocess.run([str(link), "config", "--config", str(example)], capture_output=True, text=True,
                               timeout=60)
    assert effective.returncode == 0 and 'format = "text"' in effective.stdout, effective
    for made in (page, completion, example):
        assert stat.S_IMODE(made.stat().st_mode) == 0o644 and made.stat().st_uid == 0, made
    # the admin's config and its directory as they were
    assert (etc / "config.toml").read_text() == "# the admin's\nport = [22]\n"
    assert stat.S_IMODE(etc.stat().st_mode) == 0o700 and stat.S_IMODE((etc / "config.toml").stat().st_mode) == 0o600
    assert not list(dest.rglob("*.new"))
