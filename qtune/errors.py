"""The one exception type for errors a user can act on."""


class QtuneError(Exception):
    """Bad input or environment, explained in words: the CLI prints it without a
    traceback and exits with status 2. Say what is wrong and what to do about it."""
