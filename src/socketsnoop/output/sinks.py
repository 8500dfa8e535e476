"""Sinks: where the monitor's output goes. Each is a small class with one job, on one interface (Sink).

The run command composes a list of sinks and hands each batch of events to every one of them: the
decoded rows (pipeline/decode.py) and, for a sink that wants them, their lines already formatted
(logformat/: text or JSON, as chosen). A sink never blocks reading the kernel: one that cannot
deliver counts what it drops, and the run command reports those counts on exit.
"""

import errno
import os
import stat
import sys


class Sink:
    """The interface. open() is called once before the first batch; write(rows, lines) once per batch of
    events, write_records(records, lines) once per batch of connection records (lines is None for a sink
    whose wants_lines is False); flush() after write when the sink buffers;
    reopen() on SIGHUP (logrotate); check() about once a second; close() at exit, once. dropped() is
    how many events it could not deliver, for the exit summary (0: none lost)."""

    name = "sink"
    wants_lines = True

    def open(self):
        return self

    def write(self, rows, lines):
        raise NotImplementedError

    def write_records(self, records, lines):
        """Finished connections (abi.RECORD_ROW tuples), and their lines as write() gets them. A sink
        that has nothing to do with them keeps this default."""

    def flush(self):
        pass

    def reopen(self):
        pass

    def check(self):
        pass

    def close(self):
        pass

    def dropped(self) -> int:
        return 0


class ConsoleSink(Sink):
    """Standard output. A closed pipe (socket-snoop | head) ends console output, not the monitor."""

    name = "console"

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout
        self.broken = False

    def write_records(self, records, lines):
        self.write(records, lines)

    def write(self, rows, lines):
        if self.broken:
            return
        try:
            self.stream.write("".join(lines))
            self.stream.flush()
        except OSError as e:  # a closed pipe (socket-snoop | head), a hung-up terminal, a full disk
            self.broken = True
            if not isinstance(e, BrokenPipeError):
                try:
                    sys.stderr.write(f"socket-snoop: console output stopped: {e.strerror or e}; "
                                     "the log file goes on\n")
                except OSError:
                    pass
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, self.stream.fileno())  # so the interpreter's final flush stays quiet
                os.close(devnull)
            except (OSError, ValueError):
                pass



class UnsafeLogPath(OSError):
    """The log file's path is not safe to append to as root: a symlink, not a regular file, or in a directory
    that someone else may write to. str() is the reason."""


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


def open_log(path, mode=0o640):
    """The log file, opened for appending without following a symlink or blocking on a FIFO, in a directory
    only root (or we) may write to. Raises UnsafeLogPath (with the reason) or OSError."""
    directory = os.path.dirname(os.path.abspath(path)) or "/"
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        why = insecure_dir(os.fstat(dfd), os.geteuid())
        if why:
            raise UnsafeLogPath(f"its directory {directory} is not safe for a root-owned log ({why}; "
                                "a planted symlink could make it append to any file): use a directory only "
                                "root can write to, or one that is sticky and root's, like /tmp")
        try:
            fd = os.open(os.path.basename(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
                         | os.O_NOFOLLOW | os.O_NOCTTY | os.O_NONBLOCK, mode, dir_fd=dfd)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise UnsafeLogPath("it is a symbolic link (not followed)") from None
            if e.errno == errno.ENXIO:  # a FIFO with no reader
                raise UnsafeLogPath("it is not a regular file (a FIFO)") from None
            raise
    finally:
        os.close(dfd)
    st = os.fstat(fd)
    why = ("it is not a regular file" if not stat.S_ISREG(st.st_mode)
           else "it has other hard links" if st.st_nlink > 1 else None)
    if why:
        os.close(fd)
        raise UnsafeLogPath(why)
    os.set_blocking(fd, True)
    return fd


class LogFileSink(Sink):
    """Appends to a log file, created mode 0640, safely (open_log: no symlink followed, a regular file only,
    in a directory no one else may write to).

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
