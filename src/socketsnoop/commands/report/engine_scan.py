"""The fast path's compiled reader of logs (linescan.c, built with the package where a C compiler is at hand;
without it, DuckDB reads every file itself: engine_load.py). It takes, from the blocks Python reads, the
text and JSON lines engine_sql.py's patterns take (the same grammar, the same checks, the same fields), and
hands them to DuckDB as an Arrow C stream: no pattern, no numbering pass, no copy of the lines into a table.
The lines it does not take (the Python reader's) come back by their place in the block and go to `entries`
with their text, as engine_load.py's do.

The library is looked for beside this module (the extension module setup.py builds, loaded with ctypes: it
has no Python API of its own), and its words (titles, descriptions, results, states, JSON's event names) are
given to it from logformat/, where they are written once.
"""

import ctypes
import glob
import importlib.machinery
import os

from ...kernel.abi import EV_DROP
from ...logformat.reader import DESCRIPTIONS, STATE_NAMES
from ...logformat.words import EVENT_NAMES, EVENT_TITLES, RESULT_NAMES
from .files import MAX_LINE, open_log

BLOCK = 512 << 10  # bytes read, then parsed, at a time (Python holds one: a fixed buffer)
# an array DuckDB is given: this many entries (and lines for the Python reader), or this many bytes of their text
# (lines of 64 KiB for the Python reader: 16,384 of them would be 1 GiB)
ROWS, BYTES = 16384, 8 << 20

_lib = None


class _Stream(ctypes.Structure):  # struct ArrowArrayStream: five pointers
    _fields_ = [(name, ctypes.c_void_p) for name in ("get_schema", "get_next", "get_last_error", "release",
                                                     "private_data")]


def _words():
    """The grammar's words for ls_words: text titles (kind), descriptions (state), results, states, JSON's event
    names (kind); a table each of 'text\\tvalue' lines, the tables parted by a form feed. Drop events are left
    to the Python reader (their reason: engine_sql.TITLES)."""
    tables = ({t: k for k, t in EVENT_TITLES.items() if k != EV_DROP}, DESCRIPTIONS,
              {name: k for k, name in RESULT_NAMES.items()}, STATE_NAMES,
              {name: k for k, name in EVENT_NAMES.items() if k != EV_DROP})
    return "\f".join("".join(f"{text}\t{value}\n" for text, value in t.items()) for t in tables).encode()


def _path():
    here = os.path.dirname(os.path.abspath(__file__))
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        found = glob.glob(os.path.join(here, "_linescan" + suffix))
        if found:
            return found[0]
    return None


def turned_off():
    """SOCKETSNOOP_REPORT_NO_SCAN=1: DuckDB's patterns read the lines, as where the library was not built (the
    tests compare both)."""
    return bool(os.environ.get("SOCKETSNOOP_REPORT_NO_SCAN"))


def library():
    """The loaded library, or None where it was not built (no C compiler at install), cannot be loaded or is
    turned off."""
    global _lib
    if _lib is None:
        path = None if turned_off() else _path()
        try:
            lib = ctypes.CDLL(path) if path else False
        except OSError:
            lib = False
        if lib:
            i64, ptr = ctypes.c_int64, ctypes.c_void_p
            lib.ls_batch.restype = ptr
            lib.ls_words.argtypes, lib.ls_words.restype = [ctypes.c_char_p], ctypes.c_int
            lib.ls_parse.argtypes, lib.ls_parse.restype = [ptr, ptr, i64, i64, i64, ctypes.c_int], i64
            for f in ("ls_rows", "ls_bytes", "ls_blank", "ls_too_long", "ls_first_long", "ls_n_others", "ls_line"):
                getattr(lib, f).argtypes, getattr(lib, f).restype = [ptr], i64
            lib.ls_others.argtypes, lib.ls_others.restype = [ptr], ctypes.POINTER(i64)
            lib.ls_clear.argtypes = lib.ls_free.argtypes = [ptr]
            lib.ls_export.argtypes, lib.ls_export.restype = [ptr, ptr], ctypes.c_int
            lib.ls_add_other.argtypes, lib.ls_add_other.restype = [ptr, i64, ctypes.c_char_p, i64], ctypes.c_int
            if lib.ls_words(_words()) != 0:
                lib = False
        _lib = lib
    return _lib or None


_capsule_new = ctypes.pythonapi.PyCapsule_New
_capsule_new.argtypes, _capsule_new.restype = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p], ctypes.py_object
_GET_NEXT = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)


class Scan:
    """One file as DuckDB reads it: an Arrow C stream (the PyCapsule interface) whose every array is a block
    of the file read and parsed when DuckDB asks for it (get_next, a ctypes callback on DuckDB's thread), so
    that the whole file is one INSERT (each INSERT has a cost of its own: 20 of them took 2.4 s for 1M lines,
    one 0.8 s). Beside its entries: blank and too long lines counted, the first too long's line number, and
    what went wrong in a callback (raised again by read())."""

    def __init__(self, lib, f, base):
        self.lib, self.f, self.base = lib, f, base
        self.blank = self.too_long = 0
        self.first_long = None
        self.error = None
        self.batch = lib.ls_batch()
        if not self.batch:
            raise MemoryError("the compiled reader ran out of memory")
        self.buf = bytearray(BLOCK + MAX_LINE + 2)
        self.view = memoryview(self.buf)
        self._anchor = ctypes.c_char.from_buffer(self.buf)  # buf is never resized: its address holds
        self.address = ctypes.addressof(self._anchor)
        self.have = self.line = 0  # bytes in buf before the next block (the end of the one before), lines seen
        self.skip = False  # in a line over MAX_LINE bytes whose newline is not read yet
        self.done = False
        self._next = _GET_NEXT(self._get_next)  # kept alive as long as the stream (called only within read())
        self.stream = _Stream(*(ctypes.cast(f, ctypes.c_void_p).value for f in (
            lib.ls_schema, self._next, lib.ls_stream_error, lib.ls_stream_release)), None)

    def __arrow_c_stream__(self, requested_schema=None):
        return _capsule_new(ctypes.addressof(self.stream), b"arrow_array_stream", None)

    def close(self):
        self.lib.ls_free(self.batch)
        self.batch = None

    def _get_next(self, _stream, out):
        try:
            while not self.done and self.lib.ls_rows(self.batch) < ROWS and self.lib.ls_bytes(self.batch) < BYTES:
                self._block()
            if self.done and self.lib.ls_rows(self.batch) == 0:
                ctypes.memset(out, 0, ctypes.sizeof(ctypes.c_void_p) * 10)  # the end: an ArrowArray released
            elif self.lib.ls_export(self.batch, out) != 0:
                raise MemoryError("the compiled reader ran out of memory")
            return 0
        except BaseException as e:  # raised again by read(), after DuckDB's error
            self.error = e
            return 5  # EIO

    def _block(self):
        lib, buf, view = self.lib, self.buf, self.view
        got = self.f.readinto(view[self.have:self.have + BLOCK])
        final = not got
        end = self.have + got
        if self.skip:  # a line too long: its bytes dropped as they come (have is 0), as files.py does
            nl = buf.find(b"\n", 0, end)
            if nl < 0 and not final:
                return
            self.line += 1
            self._long(1, self.line)
            self.skip = False
            end = end - nl - 1 if nl >= 0 else 0
            buf[:end] = buf[nl + 1:nl + 1 + end]
        used = lib.ls_parse(self.batch, self.address, end, self.base, self.line, final)
        if used < 0:
            raise MemoryError("the compiled reader ran out of memory")
        self.line = lib.ls_line(self.batch)
        self._counts()
        if final:
            self.done = True
            return
        rest = end - used
        if rest > MAX_LINE:
            self.skip, self.have = True, 0
        else:
            buf[:rest] = buf[used:end]
            self.have = rest

    def _long(self, count, first):
        """count lines too long counted, the first of them at line first."""
        self.too_long += count
        if self.first_long is None:
            self.first_long = first

    def _counts(self):
        """The block's counts added, its lines for the Python reader into the batch with their text (decoded as
        files.py does)."""
        lib, batch, buf = self.lib, self.batch, self.buf
        self.blank += lib.ls_blank(batch)
        too_long = lib.ls_too_long(batch)
        if too_long:
            self._long(too_long, lib.ls_first_long(batch))
        n = lib.ls_n_others(batch)
        if n:
            o, base = lib.ls_others(batch), self.base
            for i in range(n):
                line, start, stop = o[3 * i], o[3 * i + 1], o[3 * i + 2]
                text = bytes(buf[start:stop]).decode("utf-8", "replace").encode()
                if lib.ls_add_other(batch, base + 2 * line, text, len(text)) != 0:
                    raise MemoryError("the compiled reader ran out of memory")
        lib.ls_clear(batch)


def read(lib, con, path, base):
    """The file's lines into `entries` of con, by one INSERT from a Scan: the lines the library takes as entries
    (n = base + 2 * line number, what 1), the others with their text for the Python reader (what 0). One stream
    in line order: two side by side (the file cut in two at a newline) took 0.6 s longer at 1M lines, the
    table's rows no longer in the order of n for the queries after. The Scan, for its counts of what was not an
    entry (blank, too long, the first too long's line number); what a callback raised, raised again."""
    with open_log(path) as f:
        scan = Scan(lib, f, base)
        # a cursor of its own (the same database): register() refuses a connection whose last result was not
        # fetched to its end (a fetchone() of the file before)
        cur = con.cursor()
        try:
            cur.register("linescan", scan)
            try:
                cur.execute("INSERT INTO entries BY NAME SELECT * FROM linescan")
            except Exception:
                if scan.error is not None:
                    raise scan.error from None
                raise
            if scan.error is not None:
                raise scan.error
        finally:
            cur.close()
            scan.close()
    return scan
