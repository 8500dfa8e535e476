"""Sinks: where the monitor's output goes. Each is a small class with one job, on one interface (Sink).

output/build.py opens the sinks the options ask for; output/dispatch.py hands each batch to every one of
them: the decoded rows (pipeline/decode.py) and, for a sink that wants them, their lines already formatted
(logformat/: text or JSON, as chosen). A sink never blocks reading the kernel: one that cannot
deliver counts what it drops, and the exit summary (output/exit_summary.py) reports those counts.
"""

import errno
import os
import stat
import sys


class Sink:
    """The interface. open() is called once before the first batch; write(rows, lines) once per batch of
    events, write_records(records, lines) once per batch of connection records (lines is None for a sink
    whose wants_lines is False), write_batch(batch) for events and records read together (output/batch.py);
    reopen() on SIGHUP (logrotate); check() about once a second; close() at exit (it may be called again).
    dropped() is how many events it could not deliver, for the exit summary (0: none lost)."""

    name = "sink"
    wants_lines = True

    def open(self):
        return self

    def write(self, rows, lines):
        raise NotImplementedError

    def write_records(self, records, lines):
        """Finished connections (abi.RECORD_ROW tuples), and their lines as write() gets them. A sink
        that has nothing to do with them keeps this default."""

    def write_warnings(self, warnings, lines, notes):
        """Health warnings (pipeline/health's HealthWarning), their lines (None as for write()) and (text, fields)
        of each, for an output of fields. A sink that has nothing to do with them keeps this default."""

    def write_batch(self, batch):
        """Events and connection records read together, lines made for both. This default hands on the events,
        then the records: for a sink to which their order does not matter (metrics). A sink of lines takes
        batch.merged(), one of rows and lines batch.runs(): both in time order."""
        self.write(batch.rows, batch.lines if self.wants_lines else None)
        self.write_records(batch.records, batch.record_lines if self.wants_lines else None)

    def reopen(self):
        pass

    def check(self):
        pass

    def close(self):
        pass

    def dropped(self) -> int:
        return 0


class UnsafeLogPath(OSError):
    """The log file's path is not safe to append to as root: a symlink, not a regular file, someone else's
    file, or under a directory that someone else may write to. str() is the reason."""


MAX_SYMLINKS = 40  # as the kernel's path walk allows
_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC  # (O_PATH: no read permission needed)
_FILE_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NOCTTY | os.O_NONBLOCK


def insecure_dir(st, euid):
    """Why a directory is unsafe for a file we append to as root, or None: writable by someone else
    (others, a group other than root's, an owner other than us or root) unless sticky and root-owned
    (/tmp), as logrotate judges it."""
    if stat.S_ISVTX & st.st_mode and st.st_uid == 0:
        return None
    if st.st_mode & stat.S_IWOTH:
        return "it is writable by anyone"
    if st.st_mode & stat.S_IWGRP and st.st_gid != 0:
        return f"it is writable by group {st.st_gid}"
    if st.st_uid not in (0, euid):
        return f"it belongs to user {st.st_uid}"
    return None


def insecure_file(st, euid):
    """Why an existing file is unsafe to append to as root, or None: not a regular file, other hard links,
    someone else's (who could read, truncate or replace what we write), or writable by someone else."""
    if not stat.S_ISREG(st.st_mode):
        return "it is not a regular file"
    if st.st_nlink > 1:
        return "it has other hard links"
    if st.st_uid not in (0, euid):
        return f"it belongs to user {st.st_uid}, who could read, truncate or rewrite the log"
    if st.st_mode & stat.S_IWOTH:
        return "it is writable by anyone"
    if st.st_mode & stat.S_IWGRP and st.st_gid != 0:
        return f"it is writable by group {st.st_gid}"
    return None


def _unsafe_dir(where, why):
    return UnsafeLogPath(f"the directory {where} on its path is not safe for a root-owned log ({why}; someone "
                         "else could put a symlink in it and send the log anywhere): use a path whose every "
                         "directory only root can write to, or is sticky and root's, like /tmp")


def open_log_dir(path, euid):
    """(descriptor of the log file's directory, the file's name). The path is walked from / one name at a
    time (openat, O_NOFOLLOW), each directory checked (insecure_dir) as it is opened, so what is opened is
    what was checked: a directory swapped for a symlink meanwhile is not followed. A symlink on the way
    is followed only if root (or we) made it, in a directory already found safe. Raises UnsafeLogPath."""
    *todo, name = os.path.abspath(path).split("/")[1:]
    if not name:
        raise UnsafeLogPath("it names a directory")
    dfd, where, links = os.open("/", _DIR_FLAGS), "/", 0
    try:
        why = insecure_dir(os.fstat(dfd), euid)
        if why:
            raise _unsafe_dir(where, why)
        while todo:
            part = todo.pop(0)
            if part in ("", "."):
                continue
            try:
                fd = os.open(part, _DIR_FLAGS, dir_fd=dfd)
            except OSError as e:
                if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                st = os.stat(part, dir_fd=dfd, follow_symlinks=False)
                if not stat.S_ISLNK(st.st_mode):
                    raise
                full = os.path.join(where, part)
                if st.st_uid not in (0, euid):
                    raise UnsafeLogPath(f"{full} on its path is a symbolic link of user {st.st_uid} (not followed)")
                links += 1
                if links > MAX_SYMLINKS:
                    raise UnsafeLogPath(f"{full}: too many levels of symbolic links") from None
                target = os.readlink(part, dir_fd=dfd)
                todo[:0] = target.split("/")
                if target.startswith("/"):
                    fd, where = os.open("/", _DIR_FLAGS), ""
                else:
                    continue
            else:
                where = os.path.normpath(os.path.join(where, part))
            os.close(dfd)
            dfd, where = fd, where or "/"
            why = insecure_dir(os.fstat(dfd), euid)
            if why:
                raise _unsafe_dir(where, why)
    except BaseException:
        os.close(dfd)
        raise
    return dfd, name


def open_log(path, mode=0o640):
    """The log file, opened for appending without following a symlink or blocking on a FIFO, under
    directories only root (or we) may write to (open_log_dir); an existing file only if it is root's (or
    ours) and no one else may write to it. Raises UnsafeLogPath (with the reason) or OSError."""
    euid = os.geteuid()
    dfd, name = open_log_dir(path, euid)
    try:
        fd = os.open(name, _FILE_FLAGS, mode, dir_fd=dfd)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UnsafeLogPath("it is a symbolic link (not followed)") from None
        if e.errno == errno.ENXIO:  # a FIFO with no reader
            raise UnsafeLogPath("it is not a regular file (a FIFO)") from None
        raise
    finally:
        os.close(dfd)
    why = insecure_file(os.fstat(fd), euid)
    if why:
        os.close(fd)
        raise UnsafeLogPath(why)
    os.set_blocking(fd, True)
    return fd


class LogFileSink(Sink):
    """Appends to a log file, created mode 0640, safely (open_log: no symlink followed, a regular file of root's
    or ours only, under directories no one else may write to; checked again at every reopen).

    reopen() (on SIGHUP) starts writing to a new file at the same path, for
    logrotate without copytruncate. A write that fails (disk full, file
    removed, directory gone, a symlink or FIFO planted at the path) is reported
    once on stderr; the monitor goes on, and writing resumes when it works again.
    """

    name = "log file"
    MODE = 0o640

    def __init__(self, path, warn=None):
        self.path = path
        self.warn = warn or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.file = None
        self.failing = False
        self.lost = 0  # lines that could not be written
        self.file = self._open()

    def _open(self):
        fd = open_log(self.path, self.MODE)
        return os.fdopen(fd, "a", buffering=1 << 16, encoding="utf-8", errors="backslashreplace")

    def reopen(self):
        old, self.file = self.file, None
        if old:
            try:
                old.close()
            except OSError:
                pass
        try:
            self.file = self._open()
        except OSError as e:
            self._fail(e)

    def _fail(self, err):
        if not self.failing:
            self.failing = True
            self.warn(f"socket-snoop: cannot write the log file {self.path}: {err.strerror or err}; "
                      "console output goes on (writing resumes when it can, or on SIGHUP)")

    def write_warnings(self, warnings, lines, notes):
        self.write(warnings, lines)

    def write(self, rows, lines):
        if self.file is None:
            self.reopen()
            if self.file is None:
                self.lost += len(lines)
                return
        try:
            self.file.write("".join(lines))
            self.file.flush()
            if self.failing:
                self.failing = False
                self.warn(f"socket-snoop: writing the log file {self.path} again")
        except OSError as e:
            self.lost += len(lines)
            self._fail(e)
            try:
                self.file.close()
            except OSError:
                pass
            self.file = None

    def dropped(self):
        return self.lost

    def write_records(self, records, lines):
        self.write(records, lines)

    def write_batch(self, batch):
        self.write(batch.rows, batch.merged())

    def check(self):
        """Called about once a second: follow a rotated log file; report and recreate a removed one."""
        if self.file is None:
            return
        try:
            st = os.stat(self.path)
        except OSError:
            self.warn(f"socket-snoop: the log file {self.path} was removed: writing to a new one")
            self.reopen()
            return
        if st.st_ino != os.fstat(self.file.fileno()).st_ino:  # rotated: a new file stands at the path
            self.reopen()

    def close(self):
        if self.file:
            try:
                self.file.close()
            except OSError:
                pass
            self.file = None
