"""Loading weights: clod detector checkpoints and torchvision-layout ImageNet ShuffleNetV2.

Nothing here downloads: every source is a local path (or an in-memory state dict).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from clod.models.head import NanoDetPlusHead, expand_class_rows
from clod.utils.checkpoints import load_plain

# torchvision's ImageNet checkpoints also carry the classifier part, which clod does not build.
IMAGENET_DROPPED_PREFIXES = ("conv5.", "fc.")
# Present in a checkpoint only if it was saved after BN gained this buffer.
OPTIONAL_BUFFER_SUFFIX = "num_batches_tracked"
# Prefixes never loaded into a detector: a strategy's frozen teacher (docs/strategies.md §0).
IGNORED_CHECKPOINT_PREFIXES = ("teacher.",)
_ANCHOR_KEY = "backbone.conv1.0.weight"

StateDict = Mapping[str, torch.Tensor]
Source = str | os.PathLike[str] | Mapping[str, object]


class WeightLoadError(RuntimeError):
    """A state dict does not fit the model; the message names the offending keys."""


def _read(source: Source) -> Mapping[str, object]:
    if isinstance(source, Mapping):
        return source
    path = Path(source).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    return load_plain(path)  # tensors and plain types only: a weights file cannot run code


def _tensors_only(state: Mapping[str, object]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def _describe(keys: list[str], limit: int = 20) -> str:
    shown = ", ".join(sorted(keys)[:limit])
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return shown + more


def _check_keys(model_state: StateDict, loaded: StateDict, what: str) -> None:
    missing = [k for k in model_state if k not in loaded and not k.endswith(OPTIONAL_BUFFER_SUFFIX)]
    unexpected = [k for k in loaded if k not in model_state]
    wrong_shape = [
        f"{k} {tuple(v.shape)} vs model {tuple(model_state[k].shape)}"
        for k, v in loaded.items()
        if k in model_state and v.shape != model_state[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_describe(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_describe(unexpected)}")
    if wrong_shape:
        problems.append(f"shape mismatches: {_describe(wrong_shape)}")
    if problems:
        raise WeightLoadError(f"{what}: " + "; ".join(problems))


def load_imagenet_backbone(backbone: nn.Module, source: Source) -> list[str]:
    """Load torchvision's ImageNet ShuffleNetV2 weights into a clod :class:`ShuffleNetV2`.

    ``conv5.*`` and ``fc.*`` are dropped and absent ``num_batches_tracked`` buffers are
    tolerated; any other missing or unexpected key raises :class:`WeightLoadError` naming it.

    Returns:
        The dropped keys (the classifier part), sorted.
    """
    state = _tensors_only(_read(source))
    dropped = sorted(k for k in state if k.startswith(IMAGENET_DROPPED_PREFIXES))
    kept = {k: v for k, v in state.items() if not k.startswith(IMAGENET_DROPPED_PREFIXES)}
    _check_keys(backbone.state_dict(), kept, "ImageNet ShuffleNetV2 weights")
    backbone.load_state_dict(kept, strict=False)
    return dropped


def _detector_prefix(keys: list[str]) -> str:
    """The prefix before ``backbone.`` (e.g. ``model.`` in a Lightning checkpoint)."""
    prefixes = [
        k[: -len(_ANCHOR_KEY)]
        for k in keys
        if k.endswith(_ANCHOR_KEY) and not k.startswith(IGNORED_CHECKPOINT_PREFIXES)
    ]
    if not prefixes:
        raise WeightLoadError(f"no detector weights found (no key ends with {_ANCHOR_KEY!r})")
    return min(prefixes, key=len)


def load_detector_state(
    detector: nn.Module, source: Source, prefix: str | None = None
) -> list[str]:
    """Load a clod detector checkpoint (a state dict or a Lightning ``.ckpt``) strictly.

    * a ``state_dict`` entry is used when present; keys under ``prefix`` (found
      automatically: whatever precedes ``backbone.``) are loaded, ``teacher.*`` never is;
    * a checkpoint with fewer classes than the model is re-laid out class/box row-wise
      (docs/detector.md §11), so its regression rows never land in class slots;
    * files are read with ``weights_only=True``: one that needs unpickling arbitrary objects
      (a Lightning checkpoint with pickled hyper-parameters) is refused, never executed.

    Returns:
        The checkpoint keys that were not loaded (other modules of the checkpoint).
    """
    raw = _read(source)
    nested = raw.get("state_dict")
    state = _tensors_only(nested if isinstance(nested, Mapping) else raw)
    if prefix is None:
        prefix = _detector_prefix(list(state))
    selected = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    skipped = sorted(k for k in state if not k.startswith(prefix))
    head = getattr(detector, "head", None)
    if isinstance(head, NanoDetPlusHead):
        selected = _fit_class_rows(selected, head)
    _check_keys(detector.state_dict(), selected, "detector checkpoint")
    detector.load_state_dict(selected, strict=False)
    return skipped


def _fit_class_rows(
    state: dict[str, torch.Tensor], head: NanoDetPlusHead
) -> dict[str, torch.Tensor]:
    box_rows = 4 * head.num_bins
    fitted = dict(state)
    for level in range(len(head.gfl_cls)):
        weight_key, bias_key = f"head.gfl_cls.{level}.weight", f"head.gfl_cls.{level}.bias"
        if weight_key not in state or bias_key not in state:
            continue
        old_classes = state[weight_key].shape[0] - box_rows
        if old_classes < head.num_classes:
            fitted[weight_key], fitted[bias_key] = expand_class_rows(
                state[weight_key], state[bias_key], old_classes, head.num_classes
            )
    return fitted
