"""Errors a user can act on.

Anything raised as a :class:`UserError` is printed by the CLI as one line naming the file,
row or setting at fault, and the command exits with status 2 (no traceback).
"""


class UserError(Exception):
    """Bad input or settings; the message is shown to the user as is."""


class DataError(UserError):
    """A data file is missing, malformed or inconsistent."""


class ConfigError(UserError):
    """A settings file or flag is unknown or has a bad value."""
