"""cgroup v2 for the tests: the mount, and real cgroups made for a test and removed after it."""

import contextlib
import os
import signal
import time


def cgroup2_mount():
    """Where cgroup v2 is mounted here (/sys/fs/cgroup, or /sys/fs/cgroup/unified on a hybrid host), or None."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if right.split()[:1] == ["cgroup2"]:
                return left.split()[4]
    return None


@contextlib.contextmanager
def cgroups(*paths):
    """Cgroup v2 directories in real shapes (paths relative to the v2 root, e.g. /system.slice/x.service),
    made with their parents where missing; on the way out, processes still in them are killed and every
    directory made here is removed (a parent another test still uses stays). Yields the mount."""
    mount = cgroup2_mount()
    if mount is None:
        raise RuntimeError("no cgroup2 mount on this host")
    made = []
    try:
        for rel in paths:
            parts = [p for p in rel.split("/") if p]
            for i in range(1, len(parts) + 1):
                d = os.path.join(mount, *parts[:i])
                try:
                    os.mkdir(d)
                    made.append(d)
                except FileExistsError:
                    pass
        yield mount
    finally:
        for d in reversed(made):
            for _ in range(50):
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError:  # busy: a process still in it, or a child another test made
                    try:
                        with open(os.path.join(d, "cgroup.procs")) as f:
                            pids = [int(p) for p in f.read().split()]
                    except OSError:
                        pids = []
                    if not pids and os.listdir(d) and any(
                            os.path.isdir(os.path.join(d, e)) for e in os.listdir(d)):
                        break  # another test's cgroup below it: leave the parent to that test
                    for pid in pids:
                        with contextlib.suppress(OSError):
                            os.kill(pid, signal.SIGKILL)
                    time.sleep(0.1)
