"""The one exception type the command line turns into a single `error: ...` line."""


class UserError(Exception):
    """Something the user can fix (a config value, a path, a file); the message says what."""


def exit_on_user_error(command):
    """For a command's entry point: a UserError becomes one `error: ...` line and exit code 2."""
    import functools
    import sys

    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except UserError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)

    return run
