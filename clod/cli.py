"""Shared plumbing of the entry points: user-facing errors and logging."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from clod.errors import ClodError

log = logging.getLogger("clod")

EXIT_USER_ERROR = 2


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn clod's and OmegaConf's configuration errors into one line on stderr and exit 2.

    Anything else is a bug and keeps its traceback.
    """
    try:
        yield
    except ClodError as exc:
        _fail(str(exc))
    except MissingMandatoryValue as exc:
        key = getattr(exc, "full_key", None) or ""
        _fail(
            f"config key {key} has no value (it is marked ???): set it on the command line, e.g. {key}=..."
        )
    except OmegaConfBaseException as exc:
        _fail(
            f"config error: {exc}".splitlines()[0]
            if str(exc)
            else f"config error: {type(exc).__name__}"
        )


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(EXIT_USER_ERROR)
