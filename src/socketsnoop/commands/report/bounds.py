"""The report's memory bounds: names cut to a length, and byte budgets that every table draws on.

A table's key count alone does not bound memory (a name may be 60,000 characters, and a central log's hosts
each have their own tables), so every table that grows with the input takes an estimated cost in bytes from
a Budget that all hosts share, and gives it back when it lets an entry go. A table whose budget is spent
keeps what it has and counts what it could not take, as the key limits do.
"""

from ...logformat.escape import escape_comm, escape_token

# a task name is at most 15 bytes (the kernel's TASK_COMM_LEN); a longer one in a log is forged or damaged
MAX_COMM = 64
MAX_NAME = 256  # characters of a user, unit, container or pod name the tables keep (systemd: 255 for a unit)
CUT = "\\..."  # what a cut name ends with: escape_comm and escape_token never write a backslash but as \xNN

# the estimates below are about half of what CPython's allocator holds for them in the end: at 1M lines, 112 MiB
# of tables made a peak RSS of 255-261 MB; these keep the report under 200 MB (one of issue 24's bounds)
TABLE_BYTES = 56 << 20  # the summary tables and the joins of all hosts together
LIFECYCLE_BYTES = 36 << 20  # the lifecycles of all hosts together: 50,000 connections of 4 steps

# estimated bytes of an entry, beyond the text it holds (measured with tracemalloc on CPython 3.11, rounded up)
ENTRY_BYTES = 400  # a key of a counting table with its counters
TOP_BYTES = 450  # a row of a top-N heap (a Conn and its endpoints)
JOIN_BYTES = 400  # a join map's key and value (a connection id, or a lifecycle already counted)
SUMMARY_BYTES = 1600 + MAX_COMM  # a joined summary line: its fields and up to 64 state names
CONN_BYTES = 520  # a lifecycle's connection: its identity (addresses not shared), first step, map entry
STEP_BYTES = 32  # one more step of a lifecycle (16 bytes in an array that grows by steps)


class Budget:
    """Bytes that tables may hold; shared by every host's report."""

    def __init__(self, limit):
        self.limit = limit
        self.used = 0
        self.refused = 0  # times take() found no room

    def take(self, n):
        """True and n bytes taken if they fit, else False."""
        if self.used + n > self.limit:
            self.refused += 1
            return False
        self.used += n
        return True

    def give(self, n):
        self.used -= n


def bounded_put(table, key, value, limit, budget, cost):
    """table[key] = value in an OrderedDict whose entries each cost `cost` bytes of budget; the oldest go first
    while the table holds limit entries or the budget has no room. False if there was no room even with the
    table empty (the entry is not kept)."""
    if key in table:
        table[key] = value
        return True
    while len(table) >= limit or not budget.take(cost):
        if not table:
            return False
        table.popitem(last=False)
        budget.give(cost)
    table[key] = value
    return True


class Names:
    """Names as the tables keep them: escaped, cut to MAX_COMM bytes or MAX_NAME characters (cut ones end
    with CUT and are counted in `cut`)."""

    def __init__(self):
        self.cut = 0

    def comm(self, raw, pid=0):
        """A task name's escaped form (of a process, pid > 0: an empty name is not "no process"), cut if over
        MAX_COMM bytes."""
        if len(raw) <= MAX_COMM:
            return escape_comm(raw, pid)
        self.cut += 1
        return escape_comm(raw[:MAX_COMM]) + CUT

    def name(self, text):
        """A user, unit, container or pod name's escaped form, cut if over MAX_NAME characters."""
        if len(text) <= MAX_NAME:
            return escape_token(text)
        self.cut += 1
        return escape_token(text[:MAX_NAME]) + CUT
