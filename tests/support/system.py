"""The machine the tests run on: root and BTF, an unprivileged user's command, unique names, commands."""

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import uuid

import prometheus_client
import socketsnoop

READY = "Monitoring socket connections..."


def bpf_unavailable_reason():
    if os.geteuid() != 0:
        return "not root"
    if not os.path.exists("/sys/kernel/btf/vmlinux"):
        return "kernel has no BTF"
    return None


_unprivileged_copy = []


def unprivileged_command(user=65534):
    """(argv prefix, env) that run `python -m socketsnoop` as an unprivileged user, or None where no Python
    such a user can run is known. The checkout (and its .venv) may sit in a home directory of mode 0700,
    out of that user's reach: the installed package is copied once to a directory anyone can read, and
    run by the interpreter the venv was made from."""
    python = os.path.realpath(sys.executable)
    if python.startswith(("/root/", "/home/")) or not shutil.which("setpriv"):
        return None
    if not _unprivileged_copy:
        top = tempfile.mkdtemp(prefix="ss-unpriv-")
        atexit.register(shutil.rmtree, top, True)
        for package in (socketsnoop, prometheus_client):  # and its one dependency, which the venv holds
            shutil.copytree(os.path.dirname(package.__file__), os.path.join(top, package.__name__),
                            ignore=shutil.ignore_patterns("__pycache__"))
        for root, dirs, files in os.walk(top):
            os.chmod(root, 0o755)
            for f in files:
                os.chmod(os.path.join(root, f), 0o644)
        _unprivileged_copy.append(top)
    env = dict(os.environ, PYTHONPATH=_unprivileged_copy[0], PYTHONDONTWRITEBYTECODE="1")
    env.pop("VIRTUAL_ENV", None)
    prefix = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", python, "-m", "socketsnoop"]
    return prefix, env


def uniq(prefix):
    """A name no other test or concurrent run uses (nft tables, netns: 15 chars max for links)."""
    return f"{prefix}{os.getpid() % 10000}{uuid.uuid4().hex[:4]}"



def sh(*cmd, check=True, **kw):
    return subprocess.run(cmd, check=check, capture_output=True, text=True, **kw)
