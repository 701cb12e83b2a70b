"""The one exception users see as a message instead of a traceback."""


class BadInputError(ValueError):
    """A bad config value, data file, checkpoint or image.

    The message is one line that names the bad value and says what would be accepted.
    """
