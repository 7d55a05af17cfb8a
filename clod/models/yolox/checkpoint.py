"""Official YOLOX checkpoints (``yolox_nano.pth``, ``yolox_tiny.pth``) ↔ a clod Detector.

Upstream's top-level model holds ``backbone`` (the YOLOPAFPN, which itself holds the
CSPDarknet as ``backbone``) and ``head``; clod splits backbone and neck (docs/yolox.md
§2.6). The key mapping is therefore:

* ``backbone.backbone.X`` ↔ ``backbone.X`` (CSPDarknet);
* ``backbone.X`` ↔ ``neck.X`` (the PAFPN's own modules);
* ``head.X`` ↔ ``head.X``.

Files are read with ``torch.load(weights_only=True)`` (:func:`clod.utils.checkpoints.load_plain`):
a checkpoint is untrusted input, and one that would need full unpickling (which can run
code) is refused with an error naming the file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from clod.models.weights import OPTIONAL_BUFFER_SUFFIX, WeightLoadError
from clod.utils.checkpoints import load_plain

if TYPE_CHECKING:
    from clod.models.detector import Detector

OFFICIAL_CLASSES = 80  # COCO: the class count of every released checkpoint
_SHOWN_KEYS = 5
# official prefix → clod prefix; the longer official prefix must be tried first.
_TO_CLOD = (("backbone.backbone.", "backbone."), ("backbone.", "neck."), ("head.", "head."))
_TO_OFFICIAL = (("backbone.", "backbone.backbone."), ("neck.", "backbone."), ("head.", "head."))
_CLASS_ROW_KEY = "head.cls_preds."

PathLike = str | os.PathLike[str]


def _rename(key: str, table: tuple[tuple[str, str], ...]) -> str | None:
    for old, new in table:
        if key.startswith(old):
            return new + key[len(old) :]
    return None


def to_clod_key(key: str) -> str | None:
    """The clod Detector key of an official key, or None if it is not a model key."""
    return _rename(key, _TO_CLOD)


def to_official_key(key: str) -> str | None:
    """The official key of a clod Detector key, or None for a key outside the three parts."""
    return _rename(key, _TO_OFFICIAL)


def _some(keys: list[str]) -> str:
    """A few of ``keys`` and how many there are, for an error message that stays short."""
    keys = sorted(keys)
    shown = ", ".join(keys[:_SHOWN_KEYS])
    more = ", …" if len(keys) > _SHOWN_KEYS else ""
    return f"{len(keys)} ({shown}{more})"


def _official_state(raw: object, path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint: under ``"model"`` (upstream's layout) or a bare state dict."""
    if not isinstance(raw, Mapping):
        raise WeightLoadError(f"{path}: expected a dict of weights, found {type(raw).__name__}")
    nested = raw.get("model")
    state = nested if isinstance(nested, Mapping) else raw
    # Training extras (start_epoch, optimizer, amp, ...) are not weights; skip them.
    tensors = {str(k): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if tensors and all(k.startswith("module.") for k in tensors):  # saved from a DDP wrapper
        tensors = {k[len("module.") :]: v for k, v in tensors.items()}
    return tensors


def _is_class_row_mismatch(key: str, loaded: torch.Tensor, own: torch.Tensor) -> bool:
    """True for a cls_preds tensor that differs from the model's only in its class rows."""
    return (
        key.startswith(_CLASS_ROW_KEY)
        and loaded.dim() == own.dim()
        and loaded.shape[1:] == own.shape[1:]
        and loaded.shape[0] != own.shape[0]
    )


def load_official_yolox(detector: Detector, path: PathLike) -> list[str]:
    """Load an official YOLOX checkpoint file into a Detector built from the YOLOX parts.

    Every model tensor must be present and every checkpoint tensor must be used
    (``num_batches_tracked`` may be absent); otherwise :class:`WeightLoadError` names some of
    the offending keys, their count and the file. When only the class rows differ (an
    80-class COCO checkpoint, a model with C ≠ 80) everything else is loaded and the
    model keeps its own ``cls_preds``.

    Returns:
        Human-readable notes on what was not loaded (empty when everything was).
    """
    path = Path(path).expanduser()
    state = _official_state(load_plain(path), path)
    model_state = detector.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, value in state.items():
        clod_key = to_clod_key(key)
        if clod_key is None or clod_key not in model_state:
            unknown.append(key)
        else:
            mapped[clod_key] = value
    missing = [
        to_official_key(k) or k
        for k in model_state
        if k not in mapped and not k.endswith(OPTIONAL_BUFFER_SUFFIX)
    ]
    class_rows = [k for k, v in mapped.items() if _is_class_row_mismatch(k, v, model_state[k])]
    wrong_shape = [
        f"{to_official_key(k)} {tuple(v.shape)} vs model {tuple(model_state[k].shape)}"
        for k, v in mapped.items()
        if v.shape != model_state[k].shape and k not in class_rows
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_some(missing)}")
    if unknown:
        problems.append(f"unknown keys: {_some(unknown)}")
    if wrong_shape:
        problems.append(f"shape mismatches: {_some(wrong_shape)}")
    if problems:
        raise WeightLoadError(
            f"{path} does not fit this YOLOX model (is it the same size?): " + "; ".join(problems)
        )
    notes: list[str] = []
    if class_rows:
        # The checkpoint's class ids (COCO's) are not the model's, so none of its class rows
        # is copied, on any level: the model keeps its own, freshly initialised ones.
        loaded_classes = mapped[class_rows[0]].shape[0]
        mapped = {k: v for k, v in mapped.items() if not k.startswith(_CLASS_ROW_KEY)}
        notes.append(
            f"{path}: the checkpoint has {loaded_classes} classes and the model "
            f"{detector.num_classes}; head.cls_preds (class weights and biases) keep the "
            "model's fresh initialisation, everything else was loaded"
        )
    detector.load_state_dict(mapped, strict=False)
    return notes


def save_official_yolox(detector: Detector, path: PathLike) -> Path:
    """Write ``detector``'s weights as an official YOLOX checkpoint (``{"model": state}``).

    The file loads with upstream's tools (``ckpt["model"]``) and with
    :func:`load_official_yolox`. Tensors are saved detached, on CPU.
    """
    path = Path(path).expanduser()
    state: dict[str, torch.Tensor] = {}
    for key, value in detector.state_dict().items():
        official = to_official_key(key)
        if official is None:
            raise ValueError(f"{key!r} is not under backbone., neck. or head.")
        state[official] = value.detach().cpu().clone()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": state}, path)
    return path
