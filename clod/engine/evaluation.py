"""Evaluate a detector outside training: a run's task checkpoint on a test set."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from omegaconf import OmegaConf

from clod.data.build import build_experiment_tasks, is_joint, load_splits
from clod.data.loaders import eval_loader
from clod.data.scenario import Scenario, resolve_scenario
from clod.data.tasks import relabel, select_images
from clod.data.types import Batch, ImageRecord
from clod.errors import ConfigError, DataError
from clod.metrics.detection import DetectionMetric, DetectionResult
from clod.metrics.files import result_to_json
from clod.models.detector import Detector, build_detector
from clod.models.head_protocol import DetectionHead
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
    head: DetectionHead,
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


# images (B×3×H×W, the evaluation transform's input) -> the head's raw output B×N×(C+32):
# a PyTorch detector, or an exported model run by another runtime (clod.deploy).
RawForward = Callable[[torch.Tensor], torch.Tensor]
# a batch -> one dict of boxes (original-image pixels), scores and labels per image
Predict = Callable[[Batch], list[dict[str, torch.Tensor]]]


@torch.no_grad()
def evaluate_predictions(
    predict: Predict,
    num_classes: int,
    records: Sequence[ImageRecord],
    classes: Sequence[int],
    data_cfg: Mapping[str, Any],
    eval_cfg: Mapping[str, Any],
) -> DetectionResult:
    """COCO and VOC metrics over ``classes`` of the detections ``predict`` makes."""
    metric = DetectionMetric(
        num_classes,
        classes=classes,
        difficult=eval_cfg.get("difficult", "gt"),
        max_det=int(eval_cfg.get("max_det", 100)),
        coco_backend=eval_cfg.get("coco_backend", "faster"),
    )
    for batch in eval_loader(records, data_cfg):
        metric.update(
            predict(batch), record_targets([records[int(i)] for i in batch.indices]), batch.indices
        )
    return metric.compute()


def evaluate_raw(
    head: DetectionHead,
    forward: RawForward,
    records: Sequence[ImageRecord],
    classes: Sequence[int],
    data_cfg: Mapping[str, Any],
    eval_cfg: Mapping[str, Any],
) -> DetectionResult:
    """COCO and VOC metrics over ``classes`` of a model given by its raw ``forward``.

    Decoding (score threshold, NMS, max detections, seen-class mask) is ``head``'s, so a
    PyTorch model and its exported copies are scored by exactly the same rules.
    """
    predict = raw_predictor(head, forward, eval_cfg, classes)
    return evaluate_predictions(predict, head.num_classes, records, classes, data_cfg, eval_cfg)


def raw_predictor(
    head: DetectionHead, forward: RawForward, eval_cfg: Mapping[str, Any], classes: Sequence[int]
) -> Predict:
    """A model given by its raw ``forward``, decoded by ``head`` with the ``eval`` settings
    and detecting only ``classes`` (when ``eval.restrict_to_seen``)."""
    mask = torch.zeros(head.num_classes, dtype=torch.bool)
    mask[list(classes)] = True
    return lambda batch: decode_for_evaluation(head, forward(batch.images), batch, eval_cfg, mask)


def evaluate_detector(
    detector: Detector,
    records: Sequence[ImageRecord],
    classes: Sequence[int],
    data_cfg: Mapping[str, Any],
    eval_cfg: Mapping[str, Any],
) -> DetectionResult:
    """COCO and VOC metrics of ``detector`` on ``records`` over ``classes``."""
    detector.eval()
    return evaluate_raw(
        detector.head, lambda images: detector(images).raw, records, classes, data_cfg, eval_cfg
    )


@dataclass(frozen=True)
class RunTask:
    """One task of a finished (or running) run: its config, scenario and images."""

    run_dir: Path
    task: int
    cfg: dict[str, Any]  # the run's config.yaml with overrides, resolved
    scenario: Scenario

    def classes(self, which: str = "seen") -> list[int]:
        """``seen`` (after this task), ``all`` (the scenario's) or comma-separated names."""
        scenario = self.scenario
        if which == "seen":
            joint = is_joint(self.cfg.get("strategy", {}))
            return list(scenario.seen(scenario.num_tasks - 1 if joint else self.task))
        if which == "all":
            return list(range(scenario.num_classes))
        names = [n.strip() for n in which.split(",") if n.strip()]
        unknown = [n for n in names if n not in scenario.class_names]
        if unknown:
            raise ConfigError(
                f"classes: unknown class(es) {unknown}; known: {list(scenario.class_names)}"
            )
        return [scenario.class_names.index(n) for n in names]

    def test_records(self, classes: Sequence[int]) -> tuple[ImageRecord, ...]:
        """The test images the run's evaluation uses for ``classes`` (``eval.test_images``)."""
        _, test = load_splits(self.cfg["data"], self.cfg["paths"]["data_dir"])
        return select_images(
            relabel(test, self.scenario),
            classes,
            self.scenario.num_classes,
            keep_empty=self.cfg["eval"].get("test_images") == "all_images",
        )

    def train_records(self) -> tuple[ImageRecord, ...]:
        """The training images of this task, as the run trained on them."""
        _, tasks = build_experiment_tasks(self.cfg)
        return tasks[min(self.task, len(tasks) - 1)].train


def open_run(run_dir: str | Path, overrides: Sequence[str] = ()) -> tuple[dict[str, Any], Scenario]:
    """A run directory's resolved config (with dotted ``key=value`` overrides) and scenario."""
    run_dir = Path(run_dir)
    config_file = run_dir / "config.yaml"
    if not config_file.is_file():
        raise DataError(f"{run_dir} is not a clod run directory: {config_file} does not exist")
    cfg = OmegaConf.merge(OmegaConf.load(config_file), OmegaConf.from_dotlist(list(overrides)))
    resolved: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    _, test = load_splits(resolved["data"], resolved["paths"]["data_dir"])
    return resolved, resolve_scenario(resolved["scenario"], test.class_names)


class LoadedCheckpoint(NamedTuple):
    run: RunTask
    detector: Detector  # in eval mode
    path: Path
    model_cfg: dict[str, Any]  # the checkpoint's model config (it built ``detector``)


def load_run_checkpoint(
    run_dir: str | Path, task: int | None = None, overrides: Sequence[str] = ()
) -> LoadedCheckpoint:
    """``run_dir/checkpoints/task_<task>.pt`` (the last one by default), loaded without code."""
    run_dir = Path(run_dir)
    cfg, scenario = open_run(run_dir, overrides)
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
    detector = build_detector(state["model"])
    detector.load_state_dict(state["detector"])
    return LoadedCheckpoint(
        RunTask(run_dir, int(state["task"]), cfg, scenario), detector.eval(), path, state["model"]
    )


def evaluate_run_checkpoint(
    run_dir: Path, task: int | None = None, classes: str = "seen", overrides: Sequence[str] = ()
) -> dict[str, Any]:
    """Evaluate a run's task checkpoint (:func:`load_run_checkpoint`) on its test set.

    ``classes``: ``seen`` (the classes seen after that task), ``all`` (every class of
    the scenario) or comma-separated class names.
    """
    run, detector, path, _ = load_run_checkpoint(run_dir, task, overrides)
    chosen = run.classes(classes)
    result = evaluate_detector(
        detector, run.test_records(chosen), chosen, run.cfg["data"], run.cfg["eval"]
    )
    output = result_to_json(result, run.scenario.class_names)
    output.update(
        checkpoint=str(path), task=run.task, classes=[run.scenario.class_names[c] for c in chosen]
    )
    return output
