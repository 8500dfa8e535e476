"""Identity: who owns a connection, as an administrator names it.

The kernel puts in each event the owner's uid and the socket's cgroup v2 id (kernel/bpf: cgroup_of()).
This stage turns them, with the owner's pid, into names: the cgroup's path on the cgroup v2 hierarchy,
the systemd unit, the container id and the Kubernetes pod uid in that path, the user name, and the
executable. Each answer is cached (every cache has a limit and counts its misses), so a name is looked
up once per (cgroup, uid, pid), not per event.

The cgroup id is the inode number of the cgroup's directory on the cgroup2 mount (kernfs node id, 64
bits since Linux 5.5): the mount is walked once and id -> path remembered; an id not found is looked for
again by a new walk, at most once per second.
"""

import os
import pwd
import re
import time
from collections import Counter
from typing import NamedTuple

MOUNTINFO = "/proc/self/mountinfo"
# container ids in a cgroup's name: systemd's driver (docker-, libpod-, cri-containerd-, crio-<id>.scope),
# cgroupfs' (/docker/<id>, /kubepods/<qos>/pod<uid>/<id>, podman's /libpod_parent/libpod-<id>)
_CONTAINER_SCOPE = re.compile(r"(?:docker|libpod|cri-containerd|crio)-([0-9a-f]{64})(?:\.scope)?", re.ASCII)
_HEX64 = re.compile(r"[0-9a-f]{64}", re.ASCII)
_POD_SLICE = re.compile(r"kubepods(?:-[a-z]+)*-pod([0-9a-f]{8}_[0-9a-f]{4}_[0-9a-f]{4}_[0-9a-f]{4}_[0-9a-f]{12})"
                        r"\.slice", re.ASCII)
_POD_DIR = re.compile(r"pod([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})", re.ASCII)
_MOUNT_ESCAPE = re.compile(r"\\([0-7]{3})")


def cgroup2_mount(mountinfo=MOUNTINFO):
    """(mount point, root within the hierarchy) of the first cgroup2 mount, or None: /sys/fs/cgroup on a
    pure v2 host, /sys/fs/cgroup/unified on a hybrid one."""
    try:
        with open(mountinfo, encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if not sep or len(fields) < 5 or right.split()[:1] != ["cgroup2"]:
            continue

        def unescape(text):
            return _MOUNT_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), text)

        return unescape(fields[4]), unescape(fields[3])
    return None


def unit_of(path):
    """The systemd unit of a cgroup path: its last .service or .scope ('nginx.service'), or None."""
    for part in reversed(path.split("/")):
        if part.endswith((".service", ".scope")) and len(part) > 6:
            return part
    return None


def container_of(path):
    """The container id (64 hex) in a cgroup path, the innermost one, or None."""
    for part in reversed(path.split("/")):
        m = _CONTAINER_SCOPE.fullmatch(part)
        if m:
            return m.group(1)
        if _HEX64.fullmatch(part):
            return part
    return None


def pod_of(path):
    """The Kubernetes pod uid in a cgroup path (systemd's kubepods-...-pod<uid>.slice, with '_' back to '-';
    cgroupfs' /kubepods/.../pod<uid>/), or None."""
    for part in reversed(path.split("/")):
        m = _POD_SLICE.fullmatch(part)
        if m:
            return m.group(1).replace("_", "-")
        m = _POD_DIR.fullmatch(part)
        if m:
            return m.group(1)
    return None


def _depth(path):
    return len([p for p in path.split("/") if p])


class CgroupTree:
    """The cgroup v2 hierarchy: cgroup id -> path relative to the mount ('/' is the root), cached and
    bounded; a walk of the mount on a miss, at most once per min_interval seconds."""

    def __init__(self, mountinfo=MOUNTINFO, min_interval=1.0, limit=65536, found=None):
        found = found if found is not None else cgroup2_mount(mountinfo)
        self.mount, self.root = found or (None, None)
        self.min_interval = min_interval
        self.limit = limit  # cgroups remembered; a hierarchy larger than this is walked in part
        self.paths = {}
        self.gone = {}  # ids no walk found (a cgroup removed before we looked): asked once
        self.pending = set()  # ids asked while a walk was too recent: settled by the next walk
        self.last_walk = None
        self.walks = 0
        self.misses = 0
        self.truncated = False

    def walk(self):
        """Every cgroup directory under the mount: id (its inode number) -> relative path."""
        self.last_walk = time.monotonic()
        self.walks += 1
        if self.mount is None:
            return
        paths = {}
        try:
            paths[os.stat(self.mount).st_ino] = "/"
        except OSError:
            self.paths = {}
            return
        stack = [(self.mount, "")]
        while stack:
            top, rel = stack.pop()
            try:
                with os.scandir(top) as it:
                    for entry in it:
                        try:
                            if not entry.is_dir(follow_symlinks=False):
                                continue
                            ino = entry.inode()
                        except OSError:
                            continue
                        if len(paths) >= self.limit:
                            self.truncated = True
                            break
                        sub = f"{rel}/{entry.name}"
                        paths[ino] = sub
                        stack.append((entry.path, sub))
            except OSError:
                continue
        self.paths = paths

    def path_of(self, cid):
        """(relative path or None, final): final is False when the id is not known yet and a walk was
        done less than min_interval ago: ask again later."""
        path = self.paths.get(cid)
        if path is not None:
            return path, True
        if cid in self.gone:
            return None, True
        self.misses += 1
        now = time.monotonic()
        if self.last_walk is not None and now - self.last_walk < self.min_interval:
            if len(self.pending) < 4096:
                self.pending.add(cid)  # settled by the next walk, with every other id asked meanwhile
            return None, False
        self.walk()
        self.pending.add(cid)
        for asked in self.pending:  # not in the tree now: gone (or never there), not asked again
            if asked not in self.paths:
                if len(self.gone) >= 4096:
                    self.gone.clear()
                self.gone[asked] = True
        self.pending.clear()
        return self.paths.get(cid), True

    # -- for the filters (at start) ---------------------------------------------
    def relative(self, path):
        """A path as the `cgroup` key shows it, or its full path under the mount -> the relative path of an
        existing cgroup, or None."""
        if self.mount is None:
            return None
        mount = self.mount.rstrip("/")
        candidates = []
        if path == mount or path.startswith(mount + "/"):
            candidates.append(path[len(mount):] or "/")
        candidates.append(path)
        for rel in candidates:
            if os.path.isdir(mount + rel) and os.path.exists(os.path.join(mount + rel, "cgroup.procs")):
                return rel
        return None

    def id_of(self, rel):
        """(cgroup id, depth below the hierarchy's root) of an existing cgroup's relative path."""
        mount = self.mount.rstrip("/")
        return os.stat(mount + rel).st_ino, _depth(self.root or "/") + _depth(rel)

    def find_unit(self, name):
        """Relative paths of the cgroups named `name` (a unit's: 'nginx.service')."""
        self.walk()
        return sorted(p for p in self.paths.values() if p.rsplit("/", 1)[-1] == name)

    def find_container(self, prefix):
        """container id -> [relative paths of the cgroups that carry it in their own name], for the ids that
        begin with prefix."""
        self.walk()
        out = {}
        for path in self.paths.values():
            last = path.rsplit("/", 1)[-1]
            cid = container_of(last)
            if cid and cid.startswith(prefix):
                out.setdefault(cid, []).append(path)
        return out


class Owner(NamedTuple):
    """What the names of a (cgroup, uid, pid) are; None where unknown (the key is then left out)."""

    uid: int | None
    user: str | None
    cgroup: str | None
    unit: str | None
    container: str | None
    pod: str | None
    exe: str | None


class Identity:
    """(cgroup id, uid, pid) -> Owner, each part cached and bounded (misses counted: stats())."""

    def __init__(self, tree: CgroupTree, proc="/proc", limit=4096, warn=None):
        self.tree = tree
        self.proc = proc
        self.limit = limit
        self.users = {}
        self.exes = {}
        self.cgroups = {}  # id -> (path, unit, container, pod)
        self.misses = Counter()
        if tree.mount is None and warn:
            warn("socket-snoop: warning: no cgroup v2 mount on this host (/proc/self/mountinfo): the cgroup, "
                 "unit, container and pod fields are left out")

    def _bounded(self, cache, kind):
        self.misses[kind] += 1
        if len(cache) >= self.limit:
            cache.clear()

    def user(self, uid):
        name = self.users.get(uid, False)
        if name is False:
            self._bounded(self.users, "user")
            try:
                name = pwd.getpwuid(uid).pw_name
            except (KeyError, OverflowError):
                name = None
            self.users[uid] = name
        return name

    def exe(self, pid):
        """The executable's path, read once per process; '-' when the process is gone (or has none)."""
        path = self.exes.get(pid)
        if path is None:
            self._bounded(self.exes, "exe")
            try:
                path = os.readlink(f"{self.proc}/{pid}/exe")
            except OSError:
                path = "-"
            self.exes[pid] = path
        return path

    def cgroup(self, cid):
        """((path, unit, container, pod) or None, final)."""
        info = self.cgroups.get(cid)
        if info is not None:
            return info, True
        if not cid or self.tree.mount is None:
            return None, True
        path, final = self.tree.path_of(cid)
        if path is None:
            return None, final
        self._bounded(self.cgroups, "cgroup")
        info = self.cgroups[cid] = (path, unit_of(path), container_of(path), pod_of(path))
        return info, True

    def owner(self, cgroup, uid, pid):
        """(Owner, final): final is False while the cgroup is not known yet (ask again later)."""
        if pid:
            user, exe = self.user(uid), self.exe(pid)
        else:  # no process (a reset for no socket): no uid, user or exe
            uid = user = exe = None
        info, final = self.cgroup(cgroup)
        path, unit, container, pod = info or (None, None, None, None)
        return Owner(uid, user, path, unit, container, pod, exe), final

    def walks(self):
        """How many times the cgroup tree was walked: an answer that was not final stays the same until then
        (None: a tree that does not count its walks; then nothing not final is kept)."""
        return getattr(self.tree, "walks", None) if self.tree is not None else 0

    def stats(self):
        """Misses per cache (a miss is a lookup made: /proc, the passwd database, a cgroup walk)."""
        return {"cgroup": self.tree.misses, "cgroup_walks": self.tree.walks, "user": self.misses["user"],
                "exe": self.misses["exe"]}
