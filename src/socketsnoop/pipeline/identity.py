"""Identity: who owns a connection, as an administrator names it.

The kernel puts in each event the owner's uid and the socket's cgroup v2 id (kernel/bpf: cgroup_of()).
This stage turns them, with the owner's pid, into names: the cgroup's path on the cgroup v2 hierarchy,
the systemd unit, the container id and the Kubernetes pod uid in that path, the user name, and the
executable. Each answer is cached (every cache has a limit and counts its misses), so a name is looked
up once per (cgroup, uid, pid, comm), not per event.

A cgroup's name is only as trustworthy as whoever could make the directory: a unit, container or pod is
recognised where systemd, the container runtimes and the kubelet put them (names_of()), and only in the
part of the path root named (CgroupTree.trusted_depth(): a delegated subtree is its user's to name).

The cgroup id is the inode number of the cgroup's directory on the cgroup2 mount (kernfs node id, 64
bits since Linux 5.5): the mount is walked once and id -> path remembered; an id not found is looked for
again by a new walk, at most once per second.
"""

import os
import pwd
import re
import threading
import time
from collections import Counter
from typing import NamedTuple

from ..kernel.abi import COMM_LEN, IDENT_PID, IDENT_STRUCT
# container_of, pod_of, unit_of, units_of: the filters and the tests read the names of a path here
from .cgroup_names import (NO_NAMES, Names, container_of, names_of, pod_of, raw_container,  # noqa: F401
                           unit_of, units_of)

MOUNTINFO = "/proc/self/mountinfo"
_MOUNT_ESCAPE = re.compile(r"\\([0-7]{3})")
# where the comm is in an event's identity bytes (kernel/abi.py IDENT_FORMAT: ..., comm, family u8)
COMM_AT = IDENT_STRUCT.size - 1 - COMM_LEN
COMM_END = COMM_AT + COMM_LEN


def owner_key(cgroup, uid, who):
    """(cgroup id, uid, pid, comm) of an event's (or record's) identity bytes: what Identity.owner() takes. The
    comm is in the key because an exec changes it: the program after an exec is a new owner."""
    return cgroup, uid, IDENT_PID.unpack_from(who)[0], who[COMM_AT:COMM_END]


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
        self.trusted_uids = {0, os.geteuid()}

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

    # -- who named a cgroup --------------------------------------------------------
    def trusted_depth(self, rel):
        """How many leading components of a relative path root named: a directory's name is chosen by whoever
        may write to its parent, so it is trusted when the parent is owned by root (or by the monitor's own
        user) and writable by no group or other. systemd delegates user@UID.service (and a Delegate= unit's
        cgroup) by giving the directory to the user: that directory's name is root's, everything below it the
        user's. A directory gone meanwhile ends the trusted part."""
        parts = [p for p in rel.split("/") if p]
        top = self.mount.rstrip("/")
        for k, part in enumerate(parts):
            try:
                st = os.stat(top)
            except OSError:
                return k
            if st.st_uid not in self.trusted_uids or st.st_mode & 0o022:
                return k
            top = f"{top}/{part}"
        return len(parts)

    def names(self, rel):
        """The Names of an existing cgroup's relative path, as far as root named it."""
        return names_of(rel, self.trusted_depth(rel))

    # -- for the filters (at start) ---------------------------------------------
    def find_unit(self, name):
        """Relative paths of the cgroups of the systemd unit (or slice) `name` ('nginx.service'), where systemd
        puts it: below slices only, every component named by root."""
        self.walk()
        out = []
        for path in self.paths.values():
            parts = path.split("/")[1:]
            if parts[-1] != name or not all(p.endswith(".slice") for p in parts[:-1]):
                continue
            if self.trusted_depth(path) == len(parts) and (name.endswith(".slice") or self.names(path).unit == name):
                out.append(path)
        return sorted(out)

    def find_container(self, prefix):
        """container id -> [relative paths of the cgroups that carry it in their own name, where a runtime puts
        a container], for the ids that begin with prefix."""
        self.walk()
        out = {}
        for path in self.paths.values():
            cid = raw_container(path.rsplit("/", 1)[-1])
            if cid and cid.startswith(prefix) and self.names(path).container == cid:
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
    user_unit: str | None = None  # below user@UID.service: the user's own unit (cgroup_names.Names)


class Identity:
    """(cgroup id, uid, pid, comm) -> Owner, each part cached and bounded (misses counted: stats()). Asked from
    more than one thread (the monitor's formatter, the journal's and syslog's writers with --json): a lock
    keeps the caches and the tree's walk whole. The callers keep their own caches, so it is taken on their
    misses only."""

    def __init__(self, tree: CgroupTree, proc="/proc", limit=4096, warn=None):
        self.lock = threading.Lock()
        self.tree = tree
        self.proc = proc
        self.limit = limit
        self.users = {}
        self.exes = {}  # (pid, comm) -> path
        self.cgroups = {}  # id -> (path, Names)
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

    def exe(self, pid, comm=None):
        """The executable's path, read once per (process, comm): an exec gives the task the new program's
        name, so the event's comm tells the program before and after an exec apart (a program that execs one
        of the same name, or renames itself, is read again only under a new comm). '-' when the process is
        gone (or has none)."""
        key = (pid, comm)
        path = self.exes.get(key)
        if path is None:
            self._bounded(self.exes, "exe")
            try:
                path = os.readlink(f"{self.proc}/{pid}/exe")
            except OSError:
                path = "-"
            self.exes[key] = path
        return path

    def cgroup(self, cid):
        """((path, Names) or None, final)."""
        with self.lock:
            return self._cgroup(cid)

    def _cgroup(self, cid):
        info = self.cgroups.get(cid)
        if info is not None:
            return info, True
        if not cid or self.tree.mount is None:
            return None, True
        path, final = self.tree.path_of(cid)
        if path is None:
            return None, final
        self._bounded(self.cgroups, "cgroup")
        info = self.cgroups[cid] = (path, self.tree.names(path))
        return info, True

    def owner(self, cgroup, uid, pid, comm=None):
        """(Owner, final): final is False while the cgroup is not known yet (ask again later). comm: the raw
        name from the event (owner_key()), which an exec changes."""
        with self.lock:
            return self._owner(cgroup, uid, pid, comm)

    def _owner(self, cgroup, uid, pid, comm):
        if pid:
            user, exe = self.user(uid), self.exe(pid, comm)
        else:  # no process (a reset for no socket): no uid, user or exe
            uid = user = exe = None
        info, final = self._cgroup(cgroup)
        path, names = info or (None, NO_NAMES)
        return Owner(uid, user, path, names.unit, names.container, names.pod, exe, names.user_unit), final

    def walks(self):
        """How many times the cgroup tree was walked: an answer that was not final stays the same until then
        (None: a tree that does not count its walks; then nothing not final is kept)."""
        return getattr(self.tree, "walks", None) if self.tree is not None else 0

    def stats(self):
        """Misses per cache (a miss is a lookup made: /proc, the passwd database, a cgroup walk)."""
        return {"cgroup": self.tree.misses, "cgroup_walks": self.tree.walks, "user": self.misses["user"],
                "exe": self.misses["exe"]}
