"""The packaging tests' fixtures: the .deb built by `make deb` (once per run), the minbase rootfs tarball and
the rootfs' apt cache (debroot.py)."""

import glob
import os
import subprocess

import pytest

from debroot import CACHE, ROOT, minbase_tarball, pyproject_version, tools_missing


@pytest.fixture(scope="session")
def deb():
    """dist/socket-snoop_VERSION_ARCH.deb, built by `make deb` from this tree."""
    reason = tools_missing("make", "dpkg-buildpackage", "dh", "lintian")
    if reason:
        pytest.skip(reason)
    version = pyproject_version()
    for old in glob.glob(os.path.join(ROOT, "dist", f"socket-snoop_{version}_*.deb")):
        os.unlink(old)
    p = subprocess.run(["make", "deb"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    found = glob.glob(os.path.join(ROOT, "dist", f"socket-snoop_{version}_*.deb"))
    assert len(found) == 1, found
    return found[0]


@pytest.fixture(scope="session")
def minbase():
    reason = tools_missing("mmdebstrap", "unshare", "chroot")
    if reason:
        pytest.skip(reason)
    return minbase_tarball()


@pytest.fixture
def apt_archives():
    """The rootfs' apt cache of downloaded .debs, kept between runs (apt-get update still runs every time)."""
    d = os.path.join(CACHE, "apt-archives")
    os.makedirs(os.path.join(d, "partial"), exist_ok=True)
    return d
