"""The one exception type the command line turns into a single `error: ...` line."""


class UserError(Exception):
    """Something the user can fix (a config value, a path, a file); the message says what."""
