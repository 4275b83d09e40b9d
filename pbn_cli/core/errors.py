"""What the user is told: errors that end a command with one clear line.

Library code raises these; the CLI prints ``Error: <message>`` and exits with
``exit_code`` (2 for bad input or usage, 1 for other failures). Anything else
that escapes is a bug and may show a traceback.
"""


class PbnError(Exception):
    """A failure the user can act on; ``str(err)`` is the one line they see."""

    exit_code = 1


class InputError(PbnError):
    """Bad input or usage: a missing column, an empty CSV, a missing folder."""

    exit_code = 2


class LockedError(PbnError):
    """Another live pbn process holds the lock on what we would write."""

    exit_code = 1


def listed(names) -> str:
    """Names (a file's column names, say) joined for a one-line message: a character that would break the line or
    not show (a newline in a quoted header, a tab) is written as its escape, ``\\n``."""
    return ", ".join("".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in str(name))
                     for name in names)
