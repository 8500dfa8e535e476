"""The log format: one place for the lines socket-snoop writes and `report` reads back.

  words.py     the words for the kernel's numbers: event titles and names, states, owners, results, directions
  escape.py    names from outside (COMM, user, unit, cgroup) as one safe token or JSON text, and back
  base.py      the clock, the time as text, the caches every line kind shares
  text.py      the text line (the seed's format) and the Connection Summary line, with --context's names
  compact.py   the compact console line (--format compact): columns for people, never in a log, never read back
  jsonline.py  the JSON line: its keys (EVENT_KEYS, CONNECTION_KEYS) and values
  fields.py    the JSON line's keys and values as dicts, or encoded for the journal and syslog
  entries.py   what the reader gives: LoggedEvent, LoggedConnection, Endpoint, Malformed
  reader.py    the reader: a line (text, JSON, behind a syslog prefix) back to its fields, in linear time

A new line kind goes here: its words, its formatter beside the others, its reading in reader.py, and its
case in tests/unit/test_logformat_roundtrip.py. It sits between the pipeline (the decoded rows it formats)
and the outputs (which write its lines).
"""
