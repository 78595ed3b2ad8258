"""Errors a user can cause and fix; `cli.main` prints them as one line on stderr."""


class BuildError(Exception):
    """A message meant for the user, shown without a traceback."""

    exit_code = 1
