"""Whether a file may be trusted as the monitor's configuration, judged as sshd's StrictModes judges its
files: the file and every directory above it owned by root (or the user running us) and writable by no one
else, every symbolic link on the way followed and judged the same (its owner: a link's own mode means
nothing). A directory that others may write to but with the sticky bit (/tmp) is allowed: there no one may
rename or remove an entry they do not own, and every entry below it must be ours anyway."""

import os
import stat

MAX_LINKS = 40  # as the kernel's path walk (ELOOP)


def _judge(path, st, euid, final):
    """Why this component of the path cannot be trusted, or None."""
    if st.st_uid not in (0, euid):
        return f"{path} is owned by uid {st.st_uid}, not by root"
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISLNK(st.st_mode):
        return None
    if stat.S_ISDIR(st.st_mode):
        if mode & 0o022 and not mode & stat.S_ISVTX:
            return f"directory {path} is writable by {_who(mode)} (mode {mode:04o})"
        return None
    if final and mode & 0o022:
        return f"{path} is writable by {_who(mode)} (mode {mode:04o})"
    return None


def _who(mode):
    return "group and others" if mode & 0o022 == 0o022 else ("others" if mode & 0o002 else "its group")


def walk(path, euid=None):
    """Follow `path` one component at a time from '/': (why it cannot be trusted or None, the resolved
    path, its lstat). Raises OSError (FileNotFoundError for a missing file) as a path walk would."""
    euid = os.geteuid() if euid is None else euid
    todo = [p for p in os.path.abspath(path).split("/") if p]
    current, st = "/", os.lstat("/")
    why = _judge("/", st, euid, False)
    links = 0
    while todo and not why:
        name = todo.pop(0)
        if name == ".":
            continue
        if name == "..":
            current = os.path.dirname(current)
            continue
        candidate = os.path.join(current, name)
        st = os.lstat(candidate)
        why = _judge(candidate, st, euid, not todo)
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > MAX_LINKS:
                raise OSError(40, "Too many levels of symbolic links", path)
            target = os.readlink(candidate)
            if target.startswith("/"):
                current = "/"
            todo = [p for p in target.split("/") if p] + todo
            if not todo:  # a link to '/'
                st = os.lstat(current)
            continue
        current = candidate
    return why, current, st


def is_dev_null(st):
    """The null device (`--config /dev/null`: no configuration at all), whatever its mode."""
    try:
        null = os.stat(os.devnull)
    except OSError:
        return False
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == null.st_rdev
