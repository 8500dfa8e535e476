"""The packaging tests' helpers: a fresh Debian 12 minbase rootfs (mmdebstrap, its tarball cached in
tests/packaging/cache/ between runs), and a way to run a command in that rootfs as a chroot with /proc, /sys
(BTF, the cgroup mounts, tracefs) and /dev of this host, in a mount namespace of its own: whatever is mounted
there goes away with the command, nothing is left on the host."""

import os
import shutil
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CACHE = os.path.join(ROOT, "tests", "packaging", "cache")
SUITE = "bookworm"
# Debian's own tools, not a user's Python (pyenv, a venv)
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"

# $1: the rootfs; $APT_ARCHIVES, if set: a host directory for the rootfs' downloaded .debs (kept between runs)
CHROOT = r"""
set -e
r=$1; shift
mount -t proc proc "$r/proc"
mount --rbind /sys "$r/sys"
mount --rbind /dev "$r/dev"
if [ -n "$APT_ARCHIVES" ]; then mount --bind "$APT_ARCHIVES" "$r/var/cache/apt/archives"; fi
exec chroot "$r" "$@"
"""


def pyproject_version():
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        return next(line.split('"')[1] for line in f if line.startswith("version = "))


def tools_missing(*tools):
    missing = [t for t in tools if not shutil.which(t, path=PATH)]
    return f"not installed: {' '.join(missing)} (tests/run installs them)" if missing else None


def chroot_argv(root, *cmd):
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", CHROOT, "sh", str(root), *cmd]


def chroot_env(archives=None):
    env = {"PATH": PATH, "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C.UTF-8", "HOME": "/root"}
    if archives:
        env["APT_ARCHIVES"] = str(archives)
    return env


def in_chroot(root, *cmd, archives=None, timeout=600, check=True):
    p = subprocess.run(chroot_argv(root, *cmd), env=chroot_env(archives), capture_output=True, text=True,
                       timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"in the rootfs, {' '.join(cmd)}: exit {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


def minbase_tarball():
    """tests/packaging/cache/bookworm-minbase.tar: made once by mmdebstrap (about a minute), then reused."""
    tar = os.path.join(CACHE, f"{SUITE}-minbase.tar")
    if not os.path.exists(tar):
        os.makedirs(CACHE, exist_ok=True)
        tmp = f"{tar}.tmp{os.getpid()}.tar"
        subprocess.run(["mmdebstrap", "--quiet", "--variant=minbase", SUITE, tmp], check=True, env={"PATH": PATH},
                       capture_output=True, timeout=1200)
        os.replace(tmp, tar)
    return tar


def unpack(tar, root):
    os.makedirs(root)
    subprocess.run(["tar", "--numeric-owner", "-xpf", tar, "-C", str(root)], check=True, timeout=300)
    shutil.copyfile("/etc/resolv.conf", os.path.join(root, "etc", "resolv.conf"))


