"""The one exception type that means "the user can fix this": the CLI prints it without a traceback."""


class OripidError(Exception):
    """A user-facing error: the message names the file or field and says what to do."""
