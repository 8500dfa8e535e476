"""The service unit's restrictions on a process the tests start, read from the unit `service install` writes:
its capabilities (CapabilityBoundingSet=, by setpriv) and its address families (RestrictAddressFamilies=, by a
seccomp filter that refuses socket() for every other family with EAFNOSUPPORT, as systemd's does). No systemd
needed: the monitor runs as a child of the test, under the same refusals the kernel gives it in the unit."""

import ctypes.util
import os
import shutil
import socket
import sys

from socketsnoop.commands import service

FAMILIES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "families.py")


def unit_line(key, unit=None):
    """The words of the unit's `key=` line (the default unit: no config)."""
    text = unit if unit is not None else service.render_unit(["/usr/bin/socket-snoop"])
    return next(line for line in text.splitlines() if line.startswith(key + "=")).split("=", 1)[1].split()


def available():
    """Why the restrictions cannot be applied here, or None."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        return "needs root and setpriv"
    if not ctypes.util.find_library("seccomp"):
        return "needs libseccomp"
    return None


def prefix(caps=None, families=None):
    """argv to put before a command to run it with the unit's capabilities (caps: ['CAP_BPF', ...]) and address
    families (['AF_UNIX', ...]); None: the default unit's."""
    caps = unit_line("CapabilityBoundingSet") if caps is None else caps
    families = unit_line("RestrictAddressFamilies") if families is None else families
    bounding = ",".join(["-all"] + [f"+{c.lower().removeprefix('cap_')}" for c in caps])
    allowed = ",".join(str(int(getattr(socket, f))) for f in families)
    return ["setpriv", f"--bounding-set={bounding}", sys.executable, FAMILIES, allowed]
