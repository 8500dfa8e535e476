"""The names in a cgroup path: the systemd unit, the user's own unit, the container id and the Kubernetes
pod uid, recognised where systemd, the container runtimes and the kubelet make them.

Trust: whoever may write to a cgroup directory names what is below it. systemd gives user@UID.service to
that user (and a Delegate= unit's cgroup to its User=); a container's root may own its cgroup's subtree. So a
name counts only at the place its maker puts it (a unit right after the slices, a container in its runtime's
parent), and only in the part of the path root named (`trusted`, from identity.CgroupTree.trusted_depth()).
A unit's name found deeper is that unit's business: below user@UID.service, the user's own unit is
`user_unit`, shown as the user's (systemd's sd_pid_get_user_unit), never as a system unit.
"""

import re
from typing import NamedTuple

_UNIT_SUFFIXES = (".service", ".scope")
# a container's own cgroup, as the runtimes name it: systemd's driver (a scope: docker-, libpod-,
# cri-containerd-, crio-<id>.scope), cgroupfs' (/docker/<id>, /libpod_parent/libpod-<id>,
# /kubepods/<qos>/pod<uid>/<id> or crio-<id>, cri-containerd-<id>)
_CONTAINER_SCOPE = re.compile(r"(?:docker|libpod|cri-containerd|crio)-([0-9a-f]{64})\.scope", re.ASCII)
_CONTAINER_DIR = re.compile(r"(?:(?:docker|libpod|cri-containerd|crio)-)?([0-9a-f]{64})", re.ASCII)
_LIBPOD_DIR = re.compile(r"libpod-([0-9a-f]{64})", re.ASCII)
_HEX64 = re.compile(r"[0-9a-f]{64}", re.ASCII)
_POD_SLICE = re.compile(r"kubepods(?:-[a-z]+)*-pod([0-9a-f]{8}_[0-9a-f]{4}_[0-9a-f]{4}_[0-9a-f]{4}_[0-9a-f]{12})"
                        r"\.slice", re.ASCII)
_POD_DIR = re.compile(r"pod([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})", re.ASCII)
_KUBE_QOS = ("burstable", "besteffort")
_USER_MANAGER = re.compile(r"user@[0-9]+\.service", re.ASCII)  # systemd --user: its tree is delegated to the user


class Names(NamedTuple):
    """The names in a cgroup path, each None where there is none (or where it cannot be trusted).

    unit: the systemd unit, as systemd places it: the first .service or .scope after the slices
    ('/system.slice/nginx.service' -> 'nginx.service'; anything below a unit is that unit's own).
    user_unit: below user@UID.service (a tree systemd delegates to that user), the user's own unit, as the
    user's manager (or the user, who may make any directory there) named it.
    container, pod: a container id (64 hex) and a Kubernetes pod uid, where the runtimes and the kubelet put
    them (see names_of())."""

    unit: str | None = None
    user_unit: str | None = None
    container: str | None = None
    pod: str | None = None


NO_NAMES = Names()


def names_of(path, trusted=None):
    """The Names of a cgroup path (relative to the cgroup v2 root). Only the first `trusted` components count
    (those root named: CgroupTree.trusted_depth(); None: all, for a path read from a log): a unit, container
    or pod is recognised where systemd, the container runtimes or the kubelet make it, never by a name found
    deeper (a delegated subtree's owner, a container's root, may name its directories as it likes)."""
    parts = [p for p in path.split("/") if p]
    n = len(parts) if trusted is None else min(trusted, len(parts))
    if not n:
        return NO_NAMES
    first = parts[0]
    if first == "docker":  # docker's cgroupfs driver: /docker/<id>
        return Names(container=parts[1]) if n > 1 and _HEX64.fullmatch(parts[1]) else NO_NAMES
    if first == "libpod_parent":  # podman's cgroupfs driver: /libpod_parent/libpod-<id>
        m = _LIBPOD_DIR.fullmatch(parts[1]) if n > 1 else None
        return Names(container=m.group(1)) if m else NO_NAMES
    if first == "kubepods":  # the kubelet's cgroupfs driver: /kubepods[/<qos>]/pod<uid>/<id>
        return _kubepods_names(parts, n)
    return _systemd_names(parts, n)


def _kubepods_names(parts, n):
    i = 2 if n > 1 and parts[1] in _KUBE_QOS else 1
    m = _POD_DIR.fullmatch(parts[i]) if n > i else None
    if not m:
        return NO_NAMES
    c = _CONTAINER_DIR.fullmatch(parts[i + 1]) if n > i + 1 else None
    return Names(pod=m.group(1), container=c and c.group(1))


def _systemd_names(parts, n):
    """Slices, then a unit (systemd's own reading: sd_pid_get_unit, sd_pid_get_user_unit)."""
    i, pod = 0, None
    while i < n and parts[i].endswith(".slice"):
        m = _POD_SLICE.fullmatch(parts[i])
        if m:
            pod = m.group(1).replace("_", "-")
        i += 1
    if i == n or not parts[i].endswith(_UNIT_SUFFIXES) or len(parts[i]) <= 6:
        return Names(pod=pod) if pod else NO_NAMES
    unit = parts[i]
    m = _CONTAINER_SCOPE.fullmatch(unit)
    user_unit = None
    if _USER_MANAGER.fullmatch(unit):  # the user's units: named by the user, shown as the user's
        j = i + 1
        while j < len(parts) and parts[j].endswith(".slice"):
            j += 1
        if j < len(parts) and parts[j].endswith(_UNIT_SUFFIXES) and len(parts[j]) > 6:
            user_unit = parts[j]
    return Names(unit, user_unit, m and m.group(1), pod)


def unit_of(path):
    """The systemd unit of a cgroup path ('nginx.service'), or None: names_of()."""
    return names_of(path).unit


def container_of(path):
    """The container id (64 hex) of a cgroup path, or None: names_of()."""
    return names_of(path).container


def pod_of(path):
    """The Kubernetes pod uid of a cgroup path, or None: names_of()."""
    return names_of(path).pod


def units_of(path):
    """The systemd units a cgroup path is in: its slices and its unit ('/system.slice/nginx.service' ->
    ['system.slice', 'nginx.service']), as systemd places them (names_of())."""
    parts = [p for p in path.split("/") if p]
    out = []
    for part in parts:
        if not part.endswith(".slice"):
            unit = names_of(path).unit
            if unit:
                out.append(unit)
            break
        out.append(part)
    return out


def raw_container(name):
    """The container id a directory's own name carries (any runtime's shape), or None: a candidate only."""
    m = _CONTAINER_SCOPE.fullmatch(name) or _CONTAINER_DIR.fullmatch(name) or _LIBPOD_DIR.fullmatch(name)
    return m.group(1) if m else None
