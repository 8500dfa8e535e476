"""The Debian package (`make deb`): lintian-clean, what it installs, and a real install into a fresh Debian 12
minbase rootfs (mmdebstrap): apt resolves its dependencies from Debian's archive (no PyPI, no venv), then
`socket-snoop check` and the monitor run there against this kernel with real traffic, then a purge leaves
nothing behind but the log."""

import os
import subprocess

import pytest

from debroot import ROOT, chroot_argv, in_chroot, unpack
from socketsnoop.commands import service
from support.net import free_port
from support.procs import Monitor, conversation

PROGRAM = "/usr/bin/socket-snoop"
UNIT = "lib/systemd/system/socket-snoop.service"
INSTALLED = ("usr/bin/socket-snoop", UNIT, "etc/logrotate.d/socket-snoop", "usr/share/man/man1/socket-snoop.1.gz",
             "usr/share/bash-completion/completions/socket-snoop", "usr/share/doc/socket-snoop/examples/config.toml",
             "usr/lib/python3/dist-packages/socketsnoop/kernel/bpf/socketsnoop.bpf.o")
# what apt and dpkg keep about themselves: not the package's files
BOOKKEEPING = ("proc", "sys", "dev", "run", "tmp", "var/lib/dpkg", "var/lib/apt", "var/cache/apt", "var/log/apt",
               "var/log/dpkg.log", "var/log/alternatives.log", "var/cache/debconf", "var/cache/ldconfig")
LOG = "var/log/socket_monitor.log"


def deb_field(deb, field):
    return subprocess.run(["dpkg-deb", "-f", deb, field], capture_output=True, text=True, check=True).stdout.strip()


def depends(deb):
    """The package's Depends, as apt package names (first alternative, no version)."""
    names = [d.split("|")[0].split("(")[0].strip().removesuffix(":any") for d in deb_field(deb, "Depends").split(",")]
    return sorted(set(names))


def files(root):
    """Every path in the rootfs but apt's and dpkg's bookkeeping, relative to it."""
    found = set()
    for top, dirs, names in os.walk(root):
        rel = os.path.relpath(top, root)
        dirs[:] = [d for d in dirs if os.path.normpath(os.path.join(rel, d)) not in BOOKKEEPING]
        found.update(os.path.normpath(os.path.join(rel, n)) for n in dirs + names)
    return {f for f in found if f not in BOOKKEEPING}


def _without_comments(unit):
    return [line for line in unit.splitlines() if not line.startswith("#")]


def test_lintian(deb):
    """No lintian error or warning (the one override: the BPF object is eBPF code, not amd64's)."""
    p = subprocess.run(["lintian", "--fail-on", "error,warning", deb], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr


def test_contents(deb):
    """The program, the unit, logrotate, man page, completion, example config and the committed BPF object as
    it is; Debian's packages as dependencies, nothing from PyPI."""
    listing = subprocess.run(["dpkg-deb", "-c", deb], capture_output=True, text=True, check=True).stdout
    paths = {line.split()[-1].removeprefix("./") for line in listing.splitlines()}
    assert set(INSTALLED) <= paths, set(INSTALLED) - paths
    assert depends(deb) == ["libbpf1", "procps", "python3", "python3-prometheus-client", "python3-rich"]
    unit = subprocess.run(f"dpkg-deb --fsys-tarfile {deb} | tar -xOf - ./{UNIT}", shell=True, capture_output=True,
                          text=True, check=True).stdout
    # the unit `socket-snoop service install` writes for /usr/bin/socket-snoop and the default options, but for
    # the comment that says who installed it
    expected = service.render_unit([PROGRAM], log_files=[service.DEFAULT_LOG])
    assert _without_comments(unit) == _without_comments(expected) and f"\nExecStart={PROGRAM} -q" in unit
    obj = subprocess.run(f"dpkg-deb --fsys-tarfile {deb} | tar -xOf - ./{INSTALLED[-1]}", shell=True,
                         capture_output=True, check=True).stdout
    with open(os.path.join(ROOT, "src", INSTALLED[-1].split("dist-packages/")[1]), "rb") as f:
        assert obj == f.read()


@pytest.mark.bpf
def test_install_run_purge(deb, minbase, apt_archives, tmp_path):
    root = tmp_path / "rootfs"
    unpack(minbase, root)
    in_chroot(root, "apt-get", "-q", "update", archives=apt_archives)
    # the dependencies first, so that the file lists before and after compare the package alone
    in_chroot(root, "apt-get", "install", "-y", "-q", "--no-install-recommends", *depends(deb),
              archives=apt_archives)
    before = files(root)
    target = f"/tmp/{os.path.basename(deb)}"
    subprocess.run(["cp", deb, f"{root}{target}"], check=True)
    out = in_chroot(root, "apt-get", "install", "-y", "-q", "--no-install-recommends", target,
                    archives=apt_archives).stdout
    assert "0 upgraded, 1 newly installed" in out, out
    for path in INSTALLED:
        assert (root / path).exists(), path
    assert not (root / "etc/systemd/system/multi-user.target.wants/socket-snoop.service").exists(), "enabled"
    assert not (root / "opt").exists() or not os.listdir(root / "opt"), "a venv?"
    assert in_chroot(root, "dpkg-query", "-W", "python3-pip", check=False).returncode != 0

    check = in_chroot(root, "socket-snoop", "check", check=False)
    assert check.returncode == 0, check.stdout + check.stderr

    port = free_port()
    m = Monitor(tmp_path)  # started as the package installed it, in the rootfs, with its default log file
    m.args = chroot_argv(root, "socket-snoop", "-P", str(port), "--no-summary", "--no-report", "--duration", "120")
    m.start()
    try:
        spid, cpid = conversation("127.0.0.1", port, "ss-debsrv", "ss-debcli")
        assert m.stop() == 0, m.stderr
    finally:
        m.kill()
    logged = (root / LOG).read_text().splitlines()
    assert any(f"DST=127.0.0.1:{port} PID={cpid} COMM=ss-debcli STATE=Connection Established" in ln
               for ln in logged), logged
    assert any(f"SRC=127.0.0.1:{port} " in ln and f"PID={spid} COMM=ss-debsrv" in ln for ln in logged), logged

    in_chroot(root, "apt-get", "purge", "-y", "-q", "socket-snoop", archives=apt_archives)
    after = files(root)
    assert in_chroot(root, "dpkg-query", "-W", "-f=${Status}", "socket-snoop", check=False).stdout.strip() in (
        "", "unknown ok not-installed")
    assert after - before == {LOG}, sorted(after ^ before)
    assert before - after == set(), sorted(before - after)
