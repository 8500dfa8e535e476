"""The one exception a person is meant to see: printed as one line, never a traceback."""


class SnoopError(Exception):
    """A problem the user can act on. str() is the whole message."""

    def __init__(self, message, status=1):
        super().__init__(message)
        self.status = status
