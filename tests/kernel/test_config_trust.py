"""The config file is trusted only as sshd's StrictModes trusts a file: owned by root (or the user running us)
and writable by no one else, with every directory above it and every symbolic link on the way. The files are
planted by `nobody` for real (setpriv), as a local user would plant them for root to run with."""

import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from support.net import free_port

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                                reason="needs root and setpriv (files planted by nobody)")

NOBODY = 65534
PLANTED = 'no-log-file = true\nexclude-uid = ["nobody"]\n'


def as_nobody(script):
    subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "sh", "-c",
                    "umask 0; " + script], check=True, timeout=30)


def snoop(*args):
    return subprocess.run([sys.executable, "-m", "socketsnoop", *args], capture_output=True, text=True, timeout=60,
                          cwd="/")


@pytest.fixture
def places():
    """(a directory anyone may write to, mode 0777; a directory only root may write to), both under /tmp (a
    sticky directory: allowed, as its entries cannot be replaced by others)."""
    top = tempfile.mkdtemp(prefix="ss-trust-")  # root's, 0700
    os.chmod(top, 0o755)
    open_dir, safe_dir = os.path.join(top, "open"), os.path.join(top, "safe")
    os.mkdir(open_dir)
    os.chmod(open_dir, 0o777)
    os.mkdir(safe_dir, 0o755)
    try:
        yield open_dir, safe_dir
    finally:
        shutil.rmtree(top)


def refused(path, unit_dir):
    r = snoop("service", "install", "--dry-run", "--config", path, "--unit-dir", unit_dir, "--logrotate-dir", unit_dir)
    return r.returncode == 2 and r.stderr.count("\n") == 1 and "refused" in r.stderr \
        and "Traceback" not in r.stderr, r


def test_planted_files_are_refused(places):
    open_dir, safe_dir = places
    planted = os.path.join(open_dir, "config.toml")
    as_nobody(f"printf '{PLANTED}' > {planted}")  # nobody's, mode 0666, in a 0777 directory
    root_in_open = os.path.join(open_dir, "root.toml")
    with open(root_in_open, "w") as f:  # root's and 0644, but in a directory anyone can swap it in
        f.write(PLANTED)
    os.chmod(root_in_open, 0o644)
    link_to_planted = os.path.join(safe_dir, "via-link.toml")
    os.symlink(planted, link_to_planted)  # a root-owned link in a safe directory, to nobody's file
    good = os.path.join(safe_dir, "good.toml")
    with open(good, "w") as f:
        f.write(PLANTED)
    os.chmod(good, 0o644)
    nobody_link = os.path.join(open_dir, "link.toml")
    as_nobody(f"ln -s {good} {nobody_link}")  # nobody's link to a good file: nobody can point it elsewhere
    group_writable = os.path.join(safe_dir, "group.toml")
    with open(group_writable, "w") as f:
        f.write(PLANTED)
    os.chmod(group_writable, 0o664)
    nobodys = os.path.join(safe_dir, "nobodys.toml")
    with open(nobodys, "w") as f:
        f.write(PLANTED)
    os.chown(nobodys, NOBODY, NOBODY)
    os.chmod(nobodys, 0o644)
    units = os.path.join(safe_dir, "units")
    for path in (planted, root_in_open, link_to_planted, nobody_link, group_writable, nobodys):
        ok, r = refused(path, units)
        assert ok, (path, r.returncode, r.stdout[-300:], r.stderr)
    r = snoop("service", "install", "--dry-run", "--config", good, "--unit-dir", units, "--logrotate-dir", units)
    assert r.returncode == 0 and f"--config {good}" in r.stdout, r.stderr
    safe_link = os.path.join(safe_dir, "safe-link.toml")
    os.symlink(good, safe_link)
    r = snoop("service", "install", "--dry-run", "--config", safe_link, "--unit-dir", units, "--logrotate-dir", units)
    assert r.returncode == 0, r.stderr


@pytest.mark.bpf
def test_the_monitor_refuses_a_planted_config(places):
    open_dir, _safe = places
    planted = os.path.join(open_dir, "config.toml")
    as_nobody(f"printf '{PLANTED}' > {planted}")
    r = snoop("--config", planted, "-P", str(free_port()), "-q", "--no-report", "--duration", "0.5")
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert r.stderr.count("\n") == 1 and "refused" in r.stderr and f"{open_dir} is writable by" in r.stderr
