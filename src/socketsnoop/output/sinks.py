"""Sinks: where the monitor's output goes. Each is a small class with one job, on one interface (Sink).

output/build.py opens the sinks the options ask for; output/dispatch.py hands each batch to every one of
them: the decoded rows (pipeline/decode.py) and, for a sink that wants them, their lines already formatted
(logformat/: text or JSON, as chosen). A sink never blocks reading the kernel: one that cannot
deliver counts what it drops, and the exit summary (output/exit_summary.py) reports those counts.
"""

import collections
import errno
import os
import select
import stat
import sys
import threading


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

    def write_batch(self, batch):
        """Events and connection records read together, lines made for both. This default hands on the events,
        then the records: for a sink to which their order does not matter (metrics). A sink of lines takes
        batch.merged(), one of rows and lines batch.runs(): both in time order."""
        self.write(batch.rows, batch.lines if self.wants_lines else None)
        self.write_records(batch.records, batch.record_lines if self.wants_lines else None)

    def write_warnings(self, warnings, lines, notes):
        """Health warnings (pipeline/health's HealthWarning), their lines (None as for write()) and (text, fields)
        of each, for an output of fields. A sink that has nothing to do with them keeps this default."""

    def reopen(self):
        pass

    def check(self):
        pass

    def close(self):
        pass

    def dropped(self) -> int:
        return 0


class ConsoleSink(Sink):
    """Standard output, written by a thread of its own from a bounded queue (capacity lines), so that a slow or
    stalled reader (a terminal on a slow link, a FIFO nobody reads) never blocks the monitor: what does not fit
    is dropped and counted, and so is what is still queued when close() has waited CLOSE_WAIT_S. A closed pipe
    (socket-snoop | head) sets `closed`, on which the monitor stops; another error (a hung-up terminal, a full
    disk) ends console output only, said once on stderr."""

    name = "console"
    CLOSE_WAIT_S = 0.5
    IDLE_S = 0.25  # with nothing to write, the writer looks this often for a pipe whose reader has gone

    def __init__(self, capacity=10000, fd=1, warn=None):
        self.capacity = capacity
        self.fd = fd
        self.encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
        self.warn = warn or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.cond = threading.Condition()
        self.queue = collections.deque()
        self.queued = 0  # lines in the queue and in the writer's hands
        self.lost = 0  # lines dropped: queue full, not written at exit, or after a write error
        self.ended = False  # no more output: the reader has gone, or a write failed
        self.closed = False  # the reader has gone (EPIPE): the monitor stops
        self.stopping = False
        self.thread = None

    def open(self):
        self.thread = threading.Thread(target=self._run, name="socket-snoop console", daemon=True)
        self.thread.start()
        return self

    def write(self, rows, lines):
        n = len(lines)
        with self.cond:
            if self.closed:
                return  # the reader has gone: nothing is owed to it
            room = 0 if self.ended else self.capacity - self.queued
            if n > room:
                self.lost += n - max(room, 0)
                if room <= 0:
                    return
                lines, n = lines[:room], room
            self.queue.append(lines)
            self.queued += n
            self.cond.notify()

    def write_records(self, records, lines):
        self.write(records, lines)

    def write_batch(self, batch):
        self.write(batch.rows, batch.merged())

    def write_warnings(self, warnings, lines, notes):
        self.write(warnings, lines)

    def dropped(self):
        return self.lost

    def details(self):
        return ""

    def close(self):
        """Let the writer finish what is queued for up to CLOSE_WAIT_S, then count the rest as dropped."""
        if self.thread is None:
            return
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        self.thread.join(self.CLOSE_WAIT_S)
        with self.cond:
            self.ended = True  # a writer still stuck in a write counts nothing more
            if not self.closed:
                self.lost += self.queued
            self.queued = 0
            self.queue.clear()
        self.thread = None

    # -- the writer thread ---------------------------------------------------------------------------
    def _run(self):
        try:  # a pipe or FIFO: its reader's going is seen with nothing to write too (POLLERR)
            watch = stat.S_ISFIFO(os.fstat(self.fd).st_mode)
        except OSError:
            watch = False
        poll = select.poll()
        poll.register(self.fd, 0)  # POLLERR and POLLHUP only
        while True:
            with self.cond:
                if not self.queue and not self.stopping:
                    self.cond.wait(self.IDLE_S)
                if self.ended or not self.queue and self.stopping:
                    return
                lines = self.queue.popleft() if self.queue else None
            if lines is None:
                if watch and poll.poll(0):
                    return self._end(None)
                continue
            error = self._send("".join(lines).encode(self.encoding, "backslashreplace"))
            with self.cond:
                if not self.ended:
                    self.queued -= len(lines)
            if error:
                return self._end(error)

    def _send(self, data):
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.fd, view):]
            except BlockingIOError:  # a descriptor left non-blocking by whoever gave it to us
                select.select([], [self.fd], [], self.IDLE_S)
            except OSError as e:
                return e
        return None

    def _end(self, error):
        """The end of console output: the reader gone (error None or EPIPE), or another write error (said)."""
        with self.cond:
            self.ended = True
            self.closed = error is None or isinstance(error, BrokenPipeError)
            if not self.closed:
                self.lost += self.queued
            self.queued = 0
            self.queue.clear()
        if not self.closed:
            self.warn(f"socket-snoop: console output stopped: {error.strerror or error}; the log file goes on")
        try:  # later writes to it (the interpreter's final flush) go nowhere, quietly
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.fd)
            os.close(devnull)
        except OSError:
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

    def write_batch(self, batch):
        self.write(batch.rows, batch.merged())

    def write_warnings(self, warnings, lines, notes):
        self.write(warnings, lines)

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
