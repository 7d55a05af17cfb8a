"""Shared helpers for the model tests: build the shipped model configs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from clod.models import Detector, build_detector

MODEL_CONF = Path(__file__).resolve().parents[2] / "conf" / "model"


def build_model(name: str, num_classes: int = 20, **overrides: Any) -> Detector:
    """Build ``conf/model/<name>.yaml`` with ``num_classes`` class channels.

    ``overrides`` set top-level keys of the model config first (e.g. ``weights=path``).
    """
    cfg = OmegaConf.load(MODEL_CONF / f"{name}.yaml")
    cfg.num_classes = num_classes
    for key, value in overrides.items():
        cfg[key] = value
    return build_detector(cfg)


def parameter_count(module) -> int:
    return sum(p.numel() for p in module.parameters())
