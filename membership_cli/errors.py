"""Exit codes that scripts can rely on, and the error that carries one to `main`."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
# backup and restore: what went wrong decides what a script does next (retry, page, stop)
EXIT_FILE = 3  # the backup file is missing, unreadable, or cannot be written
EXIT_CORRUPT = 4  # not a backup archive, or it differs from its manifest
EXIT_UNREACHABLE = 5  # the database cannot be reached
EXIT_REFUSED = 6  # the target holds data and --yes was not given, or it is in use


class CliError(Exception):
    """Ends the command with a one-line message on stderr and `exit_code`."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def usage_error(message: str) -> CliError:
    return CliError(message, EXIT_USAGE)
