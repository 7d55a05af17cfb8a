"""Shared plumbing of the entry points: user-facing errors and logging."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

from hydra.errors import InstantiationException
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from clod.errors import EXIT_USER_ERROR, ClodError
from clod.utils.hydra_runtime import sweep_dir

log = logging.getLogger("clod")


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn clod's and OmegaConf's configuration errors into one line on stderr and exit 2.

    Anything else is a bug and keeps its traceback. Inside a multirun the line is printed and
    the error raised on, so that Hydra records this job as failed and runs the others (an exit
    would end the whole sweep).
    """
    try:
        yield
    except InstantiationException as exc:
        # instantiate() wraps what a constructor raised, e.g. a strategy's ConfigError.
        if isinstance(exc.__cause__, ClodError):
            _fail(str(exc.__cause__), exc.__cause__)
        raise
    except ClodError as exc:
        _fail(str(exc), exc)
    except MissingMandatoryValue as exc:
        key = getattr(exc, "full_key", None) or ""
        _fail(
            f"config key {key} has no value (it is marked ???): set it on the command line, e.g. {key}=...",
            exc,
        )
    except OmegaConfBaseException as exc:
        _fail(
            f"config error: {exc}".splitlines()[0]
            if str(exc)
            else f"config error: {type(exc).__name__}",
            exc,
        )


def _fail(message: str, error: BaseException) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    if sweep_dir() is not None:
        raise error
    sys.exit(EXIT_USER_ERROR)
