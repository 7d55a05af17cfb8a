"""Evaluate a detector outside training: a run's task checkpoint on a test set."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from clod.data.build import load_splits
from clod.data.loaders import eval_loader
from clod.data.scenario import resolve_scenario
from clod.data.tasks import relabel, select_images
from clod.data.types import Batch, ImageRecord
from clod.errors import ConfigError, DataError
from clod.metrics.detection import DetectionMetric, DetectionResult
from clod.metrics.files import result_to_json
from clod.models.detector import Detector, build_detector
from clod.models.head import NanoDetPlusHead
from clod.utils.checkpoints import check_targets, load_plain


def record_targets(records: Sequence[ImageRecord]) -> list[dict[str, torch.Tensor]]:
    """Ground truth of records in original-image pixels, as the metric takes it."""
    return [
        {
            "boxes": torch.from_numpy(r.boxes),
            "labels": torch.from_numpy(r.labels),
            "difficult": torch.from_numpy(r.difficult),
            "iscrowd": torch.from_numpy(r.iscrowd),
        }
        for r in records
    ]


def decode_for_evaluation(
    head: NanoDetPlusHead,
    raw: torch.Tensor,
    batch: Batch,
    eval_cfg: Mapping[str, Any],
    seen: torch.Tensor,
) -> list[dict[str, torch.Tensor]]:
    """Detections in original-image pixels with the ``eval`` settings (``seen``: bool mask over classes)."""
    return head.decode(
        raw,
        tuple(batch.images.shape[-2:]),
        batch.warps,
        batch.orig_sizes,
        score_thr=float(eval_cfg.get("score_thr", 0.05)),
        nms_iou=float(eval_cfg.get("nms_iou", 0.6)),
        max_det=int(eval_cfg.get("max_det", 100)),
        class_mask=seen if eval_cfg.get("restrict_to_seen", True) else None,
    )


@torch.no_grad()
def evaluate_detector(
    detector: Detector,
    records: Sequence[ImageRecord],
    classes: Sequence[int],
    data_cfg: Mapping[str, Any],
    eval_cfg: Mapping[str, Any],
) -> DetectionResult:
    """COCO and VOC metrics of ``detector`` on ``records`` over ``classes``."""
    detector.eval()
    num_classes = detector.num_classes
    metric = DetectionMetric(
        num_classes,
        classes=classes,
        difficult=eval_cfg.get("difficult", "gt"),
        max_det=int(eval_cfg.get("max_det", 100)),
    )
    mask = torch.zeros(num_classes, dtype=torch.bool)
    mask[list(classes)] = True
    for batch in eval_loader(records, data_cfg):
        output = detector(batch.images)
        detections = decode_for_evaluation(detector.head, output.raw, batch, eval_cfg, mask)
        metric.update(
            detections, record_targets([records[int(i)] for i in batch.indices]), batch.indices
        )
    return metric.compute()


def evaluate_run_checkpoint(
    run_dir: Path, task: int | None = None, classes: str = "seen", overrides: Sequence[str] = ()
) -> dict[str, Any]:
    """Evaluate ``run_dir/checkpoints/task_<task>.pt`` (the last one by default).

    ``classes``: ``seen`` (the classes seen after that task), ``all`` (every class of
    the scenario) or comma-separated class names. ``overrides`` are dotted
    ``key=value`` changes of the run's config (e.g. ``eval.test_images=all_images``).
    """
    run_dir = Path(run_dir)
    config_file = run_dir / "config.yaml"
    if not config_file.is_file():
        raise DataError(f"{run_dir} is not a clod run directory: {config_file} does not exist")
    cfg = OmegaConf.merge(OmegaConf.load(config_file), OmegaConf.from_dotlist(list(overrides)))
    resolved: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    checkpoints = sorted(
        (run_dir / "checkpoints").glob("task_*.pt"), key=lambda p: int(p.stem.split("_")[1])
    )
    if not checkpoints:
        raise DataError(
            f"{run_dir / 'checkpoints'} holds no finished task checkpoint (task_<k>.pt)"
        )
    if task is None:
        path = checkpoints[-1]
    else:
        path = run_dir / "checkpoints" / f"task_{task}.pt"
        if not path.is_file():
            raise DataError(
                f"{path} does not exist; finished tasks: {[p.stem for p in checkpoints]}"
            )
    state = load_plain(path)
    check_targets(state.get("model"), "clod.models.", path, "model")
    task_index = int(state["task"])

    _, test = load_splits(resolved["data"], resolved["paths"]["data_dir"])
    scenario = resolve_scenario(resolved["scenario"], test.class_names)
    detector = build_detector(state["model"])
    detector.load_state_dict(state["detector"])
    if classes == "seen":
        joint = bool(resolved.get("strategy", {}).get("joint", False))
        chosen = list(scenario.seen(scenario.num_tasks - 1 if joint else task_index))
    elif classes == "all":
        chosen = list(range(scenario.num_classes))
    else:
        names = [n.strip() for n in classes.split(",") if n.strip()]
        unknown = [n for n in names if n not in scenario.class_names]
        if unknown:
            raise ConfigError(
                f"classes: unknown class(es) {unknown}; known: {list(scenario.class_names)}"
            )
        chosen = [scenario.class_names.index(n) for n in names]

    records = select_images(
        relabel(test, scenario),
        chosen,
        scenario.num_classes,
        keep_empty=resolved["eval"].get("test_images") == "all_images",
    )
    result = evaluate_detector(detector, records, chosen, resolved["data"], resolved["eval"])
    output = result_to_json(result, scenario.class_names)
    output.update(
        checkpoint=str(path), task=task_index, classes=[scenario.class_names[c] for c in chosen]
    )
    return output
