"""The fast path's line grammar in SQL (RE2, as DuckDB runs it): a strict subset of what logformat/reader.py
reads, in the exact forms the monitor writes (IPv4, names of printable ASCII, the seed's text line and its
--context names, the JSON line with or without the owner's names, either behind an RFC 3164 syslog prefix).

A line these patterns take is one the Python reader takes, with the same fields; every other line that is not
blank goes to the Python reader, which takes or rejects it as it always did (the differential test,
tests/unit/test_report_engine.py, holds the two to the same numbers). So the patterns may be narrower than
the grammar, never wider: no repetition is nested, so RE2 runs each in time linear in the line.
"""

import re

from ...kernel.abi import EV_DROP
from ...logformat.reader import DESCRIPTIONS, STATE_NAMES
from ...logformat.words import EVENT_NAMES, EVENT_TITLES, RESULT_NAMES

OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
IP4 = rf"({OCTET}\.{OCTET}\.{OCTET}\.{OCTET})"
# an IPv6 address in lower-case hex and colons (no dotted IPv4 tail, no scope id); whether it is in the reader's
# canonical form (ipaddress's str: zeros compressed), which a pattern cannot say, is checked on the distinct
# addresses after the load (engine_load.Loader._canonical): a line with another form goes to the Python reader
IP6 = r"([0-9a-f:]{2,39})"
PORT = r"(0|[1-9]\d{0,4})"
U32 = r"(0|[1-9]\d{0,9})"
U64 = r"(0|[1-9]\d{0,19})"
# a text token of COMM: printable ASCII but '\', or \xNN of a byte escape_comm escapes (not NUL, which cuts
# the name; not '-', which it escapes only as the whole name: COMM_TEXT); at most 64 of them, so the raw name is
# at most bounds.MAX_COMM bytes and never cut
TOKEN = r"(?:[!-\[\]-~]|\\x(?:0[1-9a-f]|1[0-9a-f]|20|5c|7f|[89a-f][0-9a-f]))"
COMM_TEXT = rf"(\\x2d|{TOKEN}{{1,64}})"
NAME = r"[!-\[\]-~]{1,256}"  # a --context name kept as it is (escape_token leaves it unchanged)
# a JSON name without an escape, a space or a quote, of any length here: its length (at most MAX_JSON_NAME,
# as the text line's NAME) is checked on its value (engine_cols.OK). A counted repetition this long makes RE2's
# DFA a state per count: on lines that have the names, 3.5x the time of the whole pattern
JSON_NAME = r"[!#-\[\]-~]+"
MAX_JSON_NAME = 256
# a JSON COMM of at most 64 bytes: printable ASCII but '"' and '\\', a control byte as json.dumps writes it
# (\u00NN, not NUL), a byte that is not UTF-8 as comm_text writes it (\\xNN); nothing else with a backslash;
# empty for no process (pid 0: a reset that answers no socket) or a process with an empty name
JSON_COMM = r"(?:[ !#-\[\]-~]|\\u00(?:0[1-9a-f]|1[0-9a-f]|7f)|\\\\x[89a-f][0-9a-f]){0,64}"
JSON_ANY = r"[^\"\\\x00-\x1f]*"  # a JSON string the report does not read (the reader takes any), without an escape
STATE = "(?:" + "|".join(STATE_NAMES) + ")"
MONTH = "(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
CLOCK = r"([01]\d|2[0-3]):([0-5]\d):([0-5]\d)"
SYSLOG = (r"(?:(?:<\d{1,3}>)?(?:[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d|"
          r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:\d\d)) ([!-~]{1,255}) socket-snoop"
          r"(?:\[\d{1,10}\])?:? )?")
TEXT_HEAD = (rf"^{SYSLOG}{MONTH} (0[1-9]|[12]\d|3[01]) ([12]\d{{3}}) {CLOCK}\.(\d{{3}}) ")
TEXT_ENDPOINTS = (rf"SRC=(?:{IP4}:{PORT} DST={IP4}|\[{IP6}\]:{PORT} DST=\[{IP6}\]):{PORT} PID={U32} "
                  rf"COMM={COMM_TEXT}")
CONTEXT = (rf"(?: USER=({NAME}))?(?: UNIT=({NAME}))?(?: USER_UNIT={NAME})?(?: CONTAINER=([0-9a-f]{{12}}))?"
           rf"(?: POD={NAME})?")
TEXT_TAIL = r"[ \t\r\f\v]*$"
# a drop event's line has its reason (REASON=, "reason"), which the patterns do not read: left to the Python reader
TITLES = "(" + "|".join(t for k, t in EVENT_TITLES.items() if k != EV_DROP) + ")"
DESCRIPTION = "(" + "|".join(d.replace("(", r"\(").replace(")", r"\)") for d in DESCRIPTIONS) + ")"
TEXT_EVENT = f"{TEXT_HEAD}{TITLES}: {TEXT_ENDPOINTS} STATE={DESCRIPTION}{CONTEXT}{TEXT_TAIL}"
MS_TEXT = r"(?:-|(\d{1,14})\.(\d{3})ms)"
RESULTS = "(" + "|".join(RESULT_NAMES.values()) + ")"
STATES_TEXT = rf"(?:\.\.\.>)?(?:{STATE}(?:>{STATE})*(?:>\.\.\.>{STATE})?)?"
TEXT_SUMMARY = (f"{TEXT_HEAD}Connection Summary: {TEXT_ENDPOINTS} RESULT={RESULTS} DIR=(in|out|-) "
                f"DURATION={MS_TEXT} HANDSHAKE={MS_TEXT} SENT={U64} RECEIVED={U64} RETRANSMITS={U32} "
                f"RTT={MS_TEXT} UID={U32} STATES=({STATES_TEXT}){CONTEXT}{TEXT_TAIL}")
JSON_HEAD = (rf"^{SYSLOG}\{{\"timestamp\":\"([12]\d{{3}}-\d\d-\d\dT{CLOCK.replace('(', '(?:')})\.(\d{{3}})Z\"")
JSON_ENDPOINTS = (rf",\"family\":(?:4,\"src\":\"{IP4}\",\"sport\":{PORT},\"dst\":\"{IP4}\"|"
                  rf"6,\"src\":\"{IP6}\",\"sport\":{PORT},\"dst\":\"{IP6}\"),\"dport\":{PORT},"
                  rf"\"pid\":{U32},\"comm\":\"({JSON_COMM})\"")
JSON_NAMES = (rf"(?:,\"user\":\"({JSON_NAME})\")?(?:,\"cgroup\":\"(/{JSON_NAME[:-1]}*)\")?"
              rf"(?:,\"unit\":\"({JSON_NAME})\")?(?:,\"container\":\"([0-9a-f]{{12,64}})\")?"
              rf"(?:,\"pod\":\"{JSON_ANY}\")?(?:,\"exe\":\"{JSON_ANY}\")?(?:,\"user_unit\":\"{JSON_ANY}\")?")
JSON_KINDS = "(" + "|".join(n for k, n in EVENT_NAMES.items() if k != EV_DROP) + ")"
JSON_TAIL = r"[ \t\r]*$"
JSON_EVENT = (f"{JSON_HEAD},\"event\":\"{JSON_KINDS}\"{JSON_ENDPOINTS}(?:,\"uid\":{U32})?{JSON_NAMES}"
              rf",\"owner\":\"[a-z]{{1,16}}\",\"old_state\":(?:null|\"[A-Z0-9_]{{1,20}}\"),\"new_state\":\"({STATE})\","
              rf"\"description\":\"[^\"\\\x00-\x1f]{{0,64}}\",\"netns\":{U64},\"sock\":\"0x([0-9a-f]{{1,16}})\"\}}{JSON_TAIL}")
# a JSON number: no leading zero (json.loads refuses one)
MS_JSON = r"(?:null|(0|[1-9]\d{0,8})\.(\d{3}))"
JSON_SUMMARY = (f"{JSON_HEAD},\"event\":\"connection\"{JSON_ENDPOINTS},\"owner\":\"[a-z]{{1,16}}\","
                rf"\"direction\":(?:null|\"(in|out)\"),\"result\":\"{RESULTS}\",\"netns\":{U64},"
                rf"\"sock\":\"0x([0-9a-f]{{1,16}})\",\"uid\":{U32}{JSON_NAMES},\"bytes_sent\":{U64},"
                rf"\"bytes_received\":{U64},\"retransmits\":{U32},\"rtt_ms\":{MS_JSON},\"handshake_ms\":{MS_JSON},"
                rf"\"duration_ms\":{MS_JSON},\"states\":\[(?:\"{STATE}\"(?:,\"{STATE}\"){{0,63}})?\],"
                rf"\"states_truncated\":(?:true|false),\"complete\":(?:true|false)\}}{JSON_TAIL}")

for _p in (TEXT_EVENT, TEXT_SUMMARY, JSON_EVENT, JSON_SUMMARY):
    assert "'" not in _p  # the patterns go into the SQL as literals


def literal(values):
    """A SQL list literal of strings (ours: no quote in them)."""
    assert not any("'" in v for v in values)
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


def full(pattern):
    """regexp_full_match of the line against the pattern without its groups (RE2 then matches in one pass of
    its DFA)."""
    return "regexp_full_match(line, '" + re.sub(r"(?<!\\)\((?!\?)", "(?:", pattern) + "')"
