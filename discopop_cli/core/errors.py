"""The exceptions that reach the user as a one-line message instead of a traceback."""


class UserError(Exception):
    """A problem with the user's input: the message names the problem and the fix. Exit code 2."""

    exit_code = 2


class RunFailure(UserError):
    """The input was valid but the work failed (a non-finite loss, a failed check). Exit code 1."""

    exit_code = 1


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name if it has none), for a one-line error."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
