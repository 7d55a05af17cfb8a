"""Errors that clod reports to the user as one clear line instead of a traceback.

Entry points catch :class:`ClodError`, print ``error: <message>`` to stderr and exit
with status 2. Messages name the file or config key and say what is wrong.
"""

from __future__ import annotations

# The exit status of a user error (bad input or configuration), in every entry point.
EXIT_USER_ERROR = 2


class ClodError(Exception):
    """Base class of every error clod reports without a traceback."""


class DataError(ClodError):
    """A dataset file or directory is missing, malformed or inconsistent."""


class ConfigError(ClodError):
    """A configuration value is invalid or does not fit the data."""
