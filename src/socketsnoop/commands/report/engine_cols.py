"""The fast path's fields in SQL: each column of an entry cut from a line the patterns (engine_sql.py) took, by
the line's kind (`what`: 1 JSON event, 2 JSON summary, 3 text event, 4 text summary), with string functions
(text: the words after 'SRC='; JSON: its values parsed once by DuckDB's JSON functions, `j`). `body` is the
line without a syslog prefix; `w` the text line's words after 'SRC='.

A value the patterns let through but the Python reader would refuse (a number out of range, a date that
does not exist, too many states) makes the line's `ok` false: the line then goes to the Python reader.
"""

from ...logformat.reader import DESCRIPTIONS, STATE_NAMES
from ...logformat.words import EVENT_NAMES, EVENT_TITLES
from . import engine_sql as q

ENTRY_COLUMNS = (
    "n BIGINT, host VARCHAR, summ BOOLEAN, sec BIGINT, ms INTEGER, loc BOOLEAN, kind UTINYINT, fam UTINYINT, "
    "src VARCHAR, sport INTEGER, dst VARCHAR, dport INTEGER, pid BIGINT, comm VARCHAR, news UTINYINT, sock UBIGINT, "
    "uid BIGINT, usr VARCHAR, cgroup VARCHAR, unit VARCHAR, container VARCHAR, result VARCHAR, dir VARCHAR, "
    "dur BIGINT, hs BIGINT, sent HUGEINT, recv HUGEINT, retr BIGINT, rtt BIGINT")
NAMES = tuple(c.split()[0] for c in ENTRY_COLUMNS.split(", "))
TYPES = dict(c.split() for c in ENTRY_COLUMNS.split(", "))
# the kinds' names at their numbers (list_position - 1 is the kind: they are not 1..n, 5 has no name)
KIND_LIST = q.literal([EVENT_NAMES.get(k, "") for k in range(max(EVENT_NAMES) + 1)])
DESC_LIST = q.literal(list(DESCRIPTIONS))
STATE_LIST = q.literal(list(STATE_NAMES))
MONTHS = q.literal(["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"])
TEXT_WORDS = {"SRC": 1, "DST": 2, "PID": 3, "COMM": 4, "RESULT": 5, "DIR": 6, "DURATION": 7, "HANDSHAKE": 8,
              "SENT": 9, "RECEIVED": 10, "RETRANSMITS": 11, "RTT": 12, "UID": 13, "STATES": 14}
JSON_KEYS = ("timestamp", "event", "family", "src", "sport", "dst", "dport", "pid", "comm", "sock", "uid", "user", "cgroup",
             "unit", "container", "new_state", "result", "direction", "bytes_sent", "bytes_received", "retransmits",
             "rtt_ms", "handshake_ms", "duration_ms")
JSON_PATHS = "[" + ", ".join(f"'$.{k}'" for k in JSON_KEYS) + "]"


def word(key):
    """The value of ' KEY=' in a text line's body (the patterns checked it is there once, and where): by its
    place among the words after 'SRC=' (w); a --context name among the last five words (its key's place)."""
    if key in TEXT_WORDS:
        return f"w[{TEXT_WORDS[key]}][{len(key) + 2}:]" if key != "SRC" else "w[1]"
    # the lambda only on a line that names the key (most lines name none: ctx, then the key looked for)
    return (f"CASE WHEN ctx AND contains(body, ' {key}=') THEN coalesce(list_filter(w[-5:], lambda x: "
            f"starts_with(x, '{key}='))[1][{len(key) + 2}:], '') ELSE '' END")


# a text line names a --context key (USER=, UNIT=, ...): its words go past the fixed ones. An event's last
# fixed word is its description's, which has no '=' (a name's word has one); a summary has 14 fixed words
CTX = "CASE k WHEN 3 THEN contains(w[-1], '=') WHEN 4 THEN len(w) > 14 ELSE false END"
assert not any("=" in d for d in DESCRIPTIONS) and list(TEXT_WORDS.values())[-1] == 14


def jstr(key):
    """A JSON line's value as text ('' where it has none: the patterns checked the rest), from j, its values
    parsed once (NULL for a line of another kind); coalesced where used, not by a lambda over every value."""
    return f"coalesce(j[{JSON_KEYS.index(key) + 1}], '')"


def jnum(key):
    return f"coalesce(j[{JSON_KEYS.index(key) + 1}], 'null')"


def us(v):
    """'40.638ms' (text) or 40.638 (JSON, as JSON's parser gives it: 40.6 for 40.600) -> microseconds; '-' or
    null -> NULL."""
    return (f"CASE WHEN {v} = '-' THEN NULL WHEN {v} = 'null' THEN NULL WHEN {v} LIKE '%ms' THEN "
            f"split_part({v}, '.', 1)::BIGINT * 1000 + split_part({v}, '.', 2)[1:3]::BIGINT "
            f"ELSE ({v}::DECIMAL(18, 3) * 1000)::BIGINT END")


def name(v, json):
    """A name as the tables keep it: JSON '' unknown and '-' escaped; text '-' unknown, '' not there."""
    if json:
        return f"CASE WHEN {v} = '' THEN NULL WHEN {v} = '-' THEN '\\x2d' ELSE {v} END"
    return f"nullif(nullif({v}, '-'), '')"


TEXT_COMM = word("COMM")
JSON_COMM = jstr("comm")
# the report's form of a JSON COMM the patterns took (decoded: a control character is one, a byte not UTF-8
# is '\\xNN' already): a space or a control character as \xNN
CONTROLS = f"replace({JSON_COMM}, ' ', '\\x20')"
for _c in (*range(1, 32), 127):
    CONTROLS = f"replace({CONTROLS}, chr({_c}), '\\x{_c:02x}')"
CONTROLS = f"CASE WHEN regexp_matches({JSON_COMM}, '[\\x01-\\x1f\\x7f]') THEN {CONTROLS} " \
           f"ELSE replace({JSON_COMM}, ' ', '\\x20') END"
TEXT_SEC = "epoch(try_strptime(body[1:20], '%b %d %Y %H:%M:%S'))::BIGINT"
JSON_STAMP = "replace(" + jstr("timestamp") + "[1:19], 'T', ' ')"
# the state of a text event from its description (the patterns checked it is one of DESCRIPTIONS), by its words
# after 'STATE=' (w[5] 'STATE=Connection', w[6] 'Established', w[7] '(SYN_SENT)'): the three without the state's
# name in parentheses, else that name ('Listening (LISTEN)' and 'Unknown (...)' have it in w[6])
TEXT_STATE = (f"CASE w[6] WHEN 'Established' THEN 1 WHEN 'Closed' THEN 7 WHEN 'Socket' THEN 0 "
              f"ELSE list_position({STATE_LIST}, trim(CASE WHEN starts_with(w[6], '(') THEN w[6] ELSE w[7] END, '()')) - 1 END")
# the kind from the title's letters (the patterns checked it is one of EVENT_TITLES, at body[26])
# (drops are left to the Python reader: engine_sql.TITLES)
TEXT_KIND = ("CASE body[26] WHEN 'S' THEN 1 ELSE CASE body[28] WHEN 't' THEN 2 "
             "ELSE CASE body[32] WHEN 'S' THEN 3 ELSE 4 END END END")
assert {k: t for k, t in EVENT_TITLES.items() if k != 6} == {1: "State Change", 2: "Retransmission",
                                                             3: "Reset Sent", 4: "Reset Received"}

TEXT = {
    "sec": TEXT_SEC, "ms": "body[22:24]::INTEGER",
    # IPv4 'SRC=10.0.0.1:80', IPv6 'SRC=[2001:db8::1]:80' (the patterns checked both are of one family); the
    # port after the last ':'; dst from the word with its key: one copy less (the key has no ':')
    "fam": "CASE WHEN w[1][1] = '[' THEN 6 ELSE 4 END",
    "src": f"CASE WHEN w[1][1] = '[' THEN split_part(w[1][2:], ']', 1) ELSE split_part({word('SRC')}, ':', 1) END",
    "sport": f"split_part({word('SRC')}, ':', -1)::INTEGER",
    "dst": "CASE WHEN w[1][1] = '[' THEN split_part(w[2][6:], ']', 1) ELSE split_part(w[2], ':', 1)[5:] END",
    "dport": "split_part(w[2], ':', -1)::INTEGER",
    "pid": f"{word('PID')}::BIGINT",
    "comm": f"CASE WHEN w[4] = 'COMM=-' AND {word('PID')}::BIGINT > 0 THEN '\\x00' ELSE {TEXT_COMM} END",
    "usr": name(word("USER"), False), "unit": name(word("UNIT"), False),
    "container": f"nullif({word('CONTAINER')}, '')",
}
JSON = {
    "sec": f"epoch(try_strptime({JSON_STAMP}, '%Y-%m-%d %H:%M:%S'))::BIGINT", "ms": f"{jstr('timestamp')}[21:23]::INTEGER",
    "fam": f"{jnum('family')}::UTINYINT", "src": jstr("src"), "sport": f"{jnum('sport')}::INTEGER", "dst": jstr("dst"),
    "dport": f"{jnum('dport')}::INTEGER", "pid": f"{jnum('pid')}::BIGINT",
    # '' is no process (pid 0) or an empty name, as escape_comm says them ('-', '\\x00')
    "comm": f"CASE WHEN {JSON_COMM} = '' THEN CASE WHEN {jnum('pid')}::BIGINT > 0 THEN '\\x00' ELSE '-' END "
            f"WHEN {JSON_COMM} = '-' THEN '\\x2d' ELSE {CONTROLS} END",
    "sock": f"('0x' || nullif(ltrim({jstr('sock')}[3:], '0'), ''))::UBIGINT",
    "usr": name(jstr("user"), True), "cgroup": f"nullif({jstr('cgroup')}, '')", "unit": name(jstr("unit"), True),
    "container": f"nullif({jstr('container')}[:12], '')",
}
JSON_EVENT = {
    **JSON, "kind": f"list_position({KIND_LIST}, {jstr('event')}) - 1",
    "news": f"list_position({STATE_LIST}, {jstr('new_state')}) - 1",
    "uid": f"CASE WHEN {jnum('uid')} <> 'null' AND {jnum('uid')}::BIGINT <= 4294967295 THEN {jnum('uid')}::BIGINT END",
}
TEXT_EVENT = {
    **TEXT,
    "kind": TEXT_KIND,
    "news": TEXT_STATE,
}


def _summary(common, value, direction):
    return {**common, "uid": f"{value('uid')}::BIGINT", "result": value("result"), "dir": direction,
            "dur": us(value("duration")), "hs": us(value("handshake")), "sent": f"{value('sent')}::HUGEINT",
            "recv": f"{value('received')}::HUGEINT", "retr": f"{value('retransmits')}::BIGINT",
            "rtt": us(value("rtt"))}


_TEXT_KEYS = {"uid": "UID", "result": "RESULT", "duration": "DURATION", "handshake": "HANDSHAKE", "sent": "SENT",
              "received": "RECEIVED", "retransmits": "RETRANSMITS", "rtt": "RTT"}
_JSON_KEYS = {"uid": "uid", "duration": "duration_ms", "handshake": "handshake_ms", "sent": "bytes_sent",
              "received": "bytes_received", "retransmits": "retransmits", "rtt": "rtt_ms"}
JSON_SUMMARY = _summary(JSON, lambda k: jstr("result") if k == "result" else jnum(_JSON_KEYS[k]),
                        "nullif(trim(" + jnum("direction") + ", '\"'), 'null')")
TEXT_SUMMARY = _summary(TEXT, lambda k: word(_TEXT_KEYS[k]), f"nullif({word('DIR')}, '-')")
BY_WHAT = {1: JSON_EVENT, 2: JSON_SUMMARY, 3: TEXT_EVENT, 4: TEXT_SUMMARY}
# what the Python reader checks beyond the patterns: the date exists (sec not NULL), the numbers are in range, the
# states
STATES_OK = f"strlen({word('STATES')}) <= 400"
RANGES = "sport <= 65535 AND dport <= 65535 AND pid <= 4294967295"
SUMMARY_RANGES = ("uid <= 4294967295 AND retr <= 4294967295 AND sent <= 18446744073709551615 "
                  "AND recv <= 18446744073709551615")


# columns that are the same for every line of a kind (fields_of gives their value)
CONSTANT = ("summ", "loc")
# the JSON names' lengths, which the patterns leave open (engine_sql.JSON_NAME); a longer one goes to the Python
# reader, which cuts it as the report's tables keep names (bounds.Names)
NAMES_OK = " AND ".join(f"coalesce(strlen({c}), 0) <= {q.MAX_JSON_NAME}" for c in ("usr", "cgroup", "unit"))
OK = f"what > 0 AND sec IS NOT NULL AND states_ok AND {RANGES} AND (NOT summ OR {SUMMARY_RANGES}) AND {NAMES_OK}"


def fields_by_kind():
    """The columns of a line by its kind k (1-4; NULL for another line): each kind's expressions run on its
    own lines alone (CASE evaluates a branch on the rows it selects)."""
    out = []
    for col in NAMES[2:]:
        if col in CONSTANT:
            values = {k: {"summ": k in (2, 4), "loc": k in (3, 4)}[col] for k in BY_WHAT}
            whens = " ".join(f"WHEN {k} THEN {str(v).lower()}" for k, v in values.items())
        else:
            whens = " ".join(f"WHEN {k} THEN {BY_WHAT[k][col]}" for k in BY_WHAT if col in BY_WHAT[k])
        out.append(f"CAST(CASE k {whens} END AS {TYPES[col]}) AS {col}")
    return ", ".join(out) + f", CASE WHEN k = 4 THEN {STATES_OK} ELSE true END AS states_ok"


OK_OF = OK.replace("what > 0", "true")
