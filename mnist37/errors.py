"""The one exception users see as a message instead of a traceback."""


def first_line(error: BaseException) -> str:
    """The first line of an error's message (its type's name when the message is empty)."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


class BadInputError(ValueError):
    """A bad config value, data file, checkpoint or image.

    The message is one line that names the bad value and says what would be accepted.
    """
