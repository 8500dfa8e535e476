"""The cgroup filters' names (--cgroup, --unit, --container and their exclusions) as the kernel's cgroup ids,
found in the cgroup v2 hierarchy at start and again while the monitor runs (CgroupWatch): a name that is not
there yet (a unit a timer starts at night, a container not created yet) is a warning at start and is
filtered in the kernel from the moment it appears; a cgroup that goes is dropped from the kernel's map."""

import time

from ..errors import SnoopError
from ..kernel.abi import CGROUP_LEVELS, FV_EXCLUDE, FV_INCLUDE

ALL_LEVELS = (1 << CGROUP_LEVELS) - 1
WATCH_INTERVAL = 2.0  # seconds between two looks at the hierarchy for the names (each a walk of it)


def _paths(tree, kind, value, option):
    """The relative paths of the cgroups a --cgroup, --unit or --container value names now ([] if none)."""
    if kind == "cgroup":
        rel = tree.relative(value)
        return [rel] if rel is not None else []
    if kind == "unit":
        return tree.find_unit(value)
    found = tree.find_container(value)
    if len(found) > 1:
        raise SnoopError(f"socket-snoop: {option}: {value} matches more than one container: "
                         + ", ".join(sorted(found)), status=2)
    return next(iter(found.values()), [])


def resolve(filters, tree, kinds):
    """({cgroup id: (depth, FV_INCLUDE | FV_EXCLUDE)}, [(option, value) of the names not found]) for the
    cgroup kinds' values of `filters`, as the hierarchy is now."""
    if tree.mount is None:
        raise SnoopError("socket-snoop: --cgroup, --unit and --container need cgroup v2, and this host has "
                         "no cgroup2 mount (/proc/self/mountinfo)", status=2)
    ids, missing = {}, []
    for bit, values, pre in ((FV_INCLUDE, filters.include, "--"), (FV_EXCLUDE, filters.exclude, "--exclude-")):
        for kind in kinds:
            for value in sorted(values.get(kind.name, ())):
                option = pre + kind.name
                paths = _paths(tree, kind.name, value, option)
                if not paths:
                    missing.append((option, value))
                for path in paths:
                    cid, level = tree.id_of(path)
                    if level >= CGROUP_LEVELS:
                        raise SnoopError(f"socket-snoop: cgroup {path} is {level} levels deep: at most "
                                         f"{CGROUP_LEVELS - 1} are supported", status=2)
                    ids[cid] = (level, ids.get(cid, (level, 0))[1] | bit)
    return ids, missing


class CgroupWatch:
    """Keeps the kernel's cgroup filter map (through probe.set_cgroup_filter / drop_cgroup_filter) in step
    with the hierarchy: tick() every second or so looks again, at most every `interval` seconds."""

    def __init__(self, filters, tree, probe, kinds, warn=None, interval=WATCH_INTERVAL):
        self.filters, self.tree, self.probe, self.kinds = filters, tree, probe, kinds
        self.warn = warn or (lambda msg: None)
        self.interval = interval
        self.next = time.monotonic() + interval
        self.missing = set(filters.cgroups_missing)

    def tick(self, now=None):
        now = time.monotonic() if now is None else now
        if now < self.next:
            return
        self.next = now + self.interval
        try:
            ids, missing = resolve(self.filters, self.tree, self.kinds)
        except (SnoopError, OSError) as e:  # a cgroup removed while we looked, two containers for a prefix
            self.warn("socket-snoop: warning: the cgroup filters were not updated: "
                      + str(e).removeprefix("socket-snoop: "))
            return
        old = self.filters.cgroup_ids
        try:
            for cid, (_level, bits) in ids.items():
                if old.get(cid, (None, None))[1] != bits:
                    self.probe.set_cgroup_filter(cid, bits)
        except SnoopError as e:  # the map is full: tried again at the next look
            self.warn("socket-snoop: warning: the cgroup filters were not updated: "
                      + str(e).removeprefix("socket-snoop: "))
            return
        for cid in old.keys() - ids.keys():
            self.probe.drop_cgroup_filter(cid)
        for option, value in sorted(self.missing - set(missing)):
            self.warn(f"socket-snoop: {option} {value}: appeared, filtered in the kernel from now on")
        self.filters.cgroup_ids, self.missing = ids, set(missing)
