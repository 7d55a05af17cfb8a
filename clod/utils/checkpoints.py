"""Loading checkpoint files that may come from elsewhere, without ever running their code.

Researchers exchange checkpoints: a published base model, a colleague's run directory.
A pickle can execute arbitrary code when it is loaded, so clod writes every checkpoint
as tensors and plain Python types and reads every one with ``torch.load(weights_only=True)``,
which refuses anything else. A file that needs real unpickling is refused with a message
naming it, before any of its code can run.

A checkpoint also carries configuration (the model it was trained with). Hydra would
instantiate whatever ``_target_`` such a config names, so a config read from a file may
name only targets inside clod's own packages (:func:`check_targets`).
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from clod.errors import ConfigError, DataError


def load_plain(path: str | Path) -> Any:
    """``torch.load`` restricted to tensors and plain types; a clear error for anything else."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else "unknown object"
        raise DataError(
            f"{path} is refused: it holds Python objects that only full unpickling could load, "
            f"and unpickling a file can run code ({reason}). clod reads only tensors and plain "
            f"types; if you trust the file, load it yourself and save its state dicts again"
        ) from None
    except (RuntimeError, EOFError, OSError) as error:
        raise DataError(f"{path} is not a readable checkpoint: {error}") from None


def check_targets(cfg: Any, allowed_prefix: str, source: str | Path, key: str = "") -> None:
    """Refuse a config from a file whose ``_target_`` points outside ``allowed_prefix``."""
    if isinstance(cfg, Mapping):
        target = cfg.get("_target_")
        if target is not None and not str(target).startswith(allowed_prefix):
            where = f"{key}._target_" if key else "_target_"
            raise ConfigError(
                f"{source}: {where}={target!r} is refused: a configuration read from a file may "
                f"only build clod's own classes ({allowed_prefix}*)"
            )
        for name, value in cfg.items():
            check_targets(value, allowed_prefix, source, f"{key}.{name}" if key else str(name))
    elif isinstance(cfg, list | tuple):
        for i, value in enumerate(cfg):
            check_targets(value, allowed_prefix, source, f"{key}[{i}]")
