"""The one exception type that reaches the user as a one-line message instead of a traceback."""


class UserError(Exception):
    """A problem with the user's input: the message names the problem and the fix."""

    exit_code = 2
