"""The names the report's code knows the parsed log lines by: the line reader is logformat/reader.py's Parser
(linear time on any line), the entries logformat/entries.py's; files are read by files.py."""

from ...logformat.entries import Endpoint, LoggedConnection, LoggedEvent, Malformed
from ...logformat.reader import NAME_KINDS, Parser

Record, Summary = LoggedEvent, LoggedConnection
__all__ = ["Endpoint", "Malformed", "NAME_KINDS", "Parser", "Record", "Summary"]
