"""Enrich: what user space adds to an event that the kernel could not know.

An enricher looks at a batch of decoded rows (pipeline/decode.py) in two steps, so that the common
case costs nothing per event in Python: pick(rows) names, at C speed, the few rows it must look at;
enrich(rows, which) changes those (a new row in place) and may drop some (set to None), counting
each drop in `filtered`. The run command calls each enricher in turn.
"""

from itertools import compress, count
from operator import itemgetter

from ..kernel.abi import F_OWNER_UNVERIFIED, OWNER_CURRENT, R_OWNER_UNVERIFIED
from .decode import (
    FLAGS,
    INO,
    NEWSTATE,
    OWNER,
    OWNER_PROC,
    R_FLAGS,
    R_INO,
    R_OWNER,
    R_UID,
    SK,
    TCP_CLOSE,
    UID,
    Row,
    ident_of,
    ident_of_record,
    make_ident,
)

_sk, _ino, _flags = itemgetter(SK), itemgetter(INO), itemgetter(FLAGS)
_r_ino, _r_flags = itemgetter(R_INO), itemgetter(R_FLAGS)


class Enricher:
    """The interface: pick(rows) -> indexes of the rows to look at; enrich(rows, which) -> None, changing
    rows in place (a row set to None is dropped). enrich_records(rows) -> the connection records (abi.RECORD_ROW
    tuples) it keeps, changed where needed. filtered, records_filtered: what it dropped so far."""

    filtered = 0
    records_filtered = 0

    def pick(self, rows):
        return ()

    def enrich(self, rows, which):
        pass

    def enrich_records(self, rows):
        return rows


class ProcOwnerEnricher(Enricher):
    """Owners of sockets older than the monitor, from /proc (pipeline/owners.py), and the pid/comm
    filters for such owners.

    The kernel sends the socket's inode when it knows no owner (a socket that predates us); the owner
    found in /proc is put in the event and taught to the kernel (its owner map), so that the socket's
    next events carry it. A socket taught that way is forgotten again at CLOSE. An event whose owner
    the kernel could not check against -p/-c (flag F_OWNER_UNVERIFIED) is checked here.
    """

    def __init__(self, owners, probe, filters):
        self.owners = owners  # pipeline.owners.ProcOwners
        self.probe = probe  # kernel.loader.Probe: set_owner, forget_owner
        self.filters = filters
        self.taught = set()  # sockets whose owner (from /proc) we put in the kernel's map
        self.filtered = 0
        self.records_filtered = 0

    def pick(self, rows):
        which = set()
        # most batches have no row with an inode or a flag: any() tells so at C speed, making nothing
        if any(map(_ino, rows)):
            which.update(compress(count(), map(_ino, rows)))
        if any(map(_flags, rows)):
            which.update(compress(count(), map(_flags, rows)))
        if self.taught:
            which.update(compress(count(), map(self.taught.__contains__, map(_sk, rows))))
        return which

    def enrich(self, rows, which):
        taught = self.taught
        for i in which:
            row = rows[i]
            if row[INO] and row[OWNER] == OWNER_CURRENT:  # an inode, and no owner known in the kernel
                row = rows[i] = self.from_proc(row)
            elif row[NEWSTATE] == TCP_CLOSE and row[SK] in taught:
                # we told the kernel this socket's owner after it had closed it, maybe: forget it
                taught.discard(row[SK])
                self.probe.forget_owner(row[SK])
            if row[FLAGS] & F_OWNER_UNVERIFIED:
                who = ident_of(row)
                if not self.filters.match_owner(who.pid, who.comm, row[UID]):
                    self.filtered += 1
                    rows[i] = None

    def from_proc(self, row):
        """A socket older than us: its owner from /proc, remembered in the kernel too."""
        found = self.owners.lookup(row[INO])
        if found is None:
            return row
        pid, comm, uid = found
        if row[NEWSTATE] != TCP_CLOSE:  # the kernel forgets a socket at CLOSE: do not teach it a dead one
            self.probe.set_owner(row[SK], pid, comm, uid)
            self.taught.add(row[SK])
        who = ident_of(row)._replace(pid=pid, comm=comm)
        return Row._make(row)._replace(owner=OWNER_PROC, ident=make_ident(*who), uid=uid)

    def enrich_records(self, rows):
        """Records of sockets older than us whose owner the kernel never learned: from /proc, if the process
        still holds the socket; and the pid/comm filters for owners the kernel could not check."""
        which = set(compress(count(), map(_r_ino, rows)))
        which.update(compress(count(), map(_r_flags, rows)))
        if not which:
            return rows
        for i in which:
            row = rows[i]
            if row[R_INO] and row[R_OWNER] == OWNER_CURRENT:
                found = self.owners.lookup(row[R_INO])
                if found:
                    who = ident_of_record(row)._replace(pid=found[0], comm=found[1])
                    row = rows[i] = (*row[:R_UID], found[2], *row[R_UID + 1:R_OWNER], OWNER_PROC, make_ident(*who))
            if row[R_FLAGS] & R_OWNER_UNVERIFIED:
                who = ident_of_record(row)
                if not self.filters.match_owner(who.pid, who.comm):
                    self.records_filtered += 1
                    rows[i] = None
        return [r for r in rows if r is not None]
