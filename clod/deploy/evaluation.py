"""An exported model scored on a run's test set by the run's own evaluation rules.

``python -m clod.evaluate model=<file.onnx> run=<run dir>``: the task, class names and
seen classes come from the file's metadata, the images, metric and decoding settings
(score threshold, NMS, max detections, seen-class mask) from the run, exactly as for the
PyTorch checkpoint, so the two numbers differ only by what the export changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clod.deploy.runtime import OnnxDetector
from clod.engine.evaluation import RunTask, evaluate_predictions, open_run
from clod.errors import DataError
from clod.metrics.files import result_to_json


def evaluate_onnx(
    model_path: str | Path,
    run_dir: str | Path,
    classes: str = "seen",
    overrides: Sequence[str] = (),
    threads: int | None = None,
) -> dict[str, Any]:
    model = OnnxDetector.load(model_path, threads)
    cfg, scenario = open_run(run_dir, overrides)
    if list(model.metadata["class_names"]) != list(scenario.class_names):
        raise DataError(
            f"{model_path} was exported for classes {model.metadata['class_names']}, but "
            f"{run_dir} has {list(scenario.class_names)}"
        )
    task = int(model.metadata["task"])
    if task >= scenario.num_tasks:
        raise DataError(
            f"{model_path} is task {task}, but {run_dir} has {scenario.num_tasks} tasks"
        )
    run = RunTask(Path(run_dir), task, cfg, scenario)
    chosen = run.classes(classes)
    # the graph's input size is fixed: images are resized to what the model was exported at
    data_cfg = {**cfg["data"], "input_size": list(model.input_size)}
    result = evaluate_predictions(
        model.predictor(cfg["eval"], chosen),
        model.head.num_classes,
        run.test_records(chosen),
        chosen,
        data_cfg,
        cfg["eval"],
    )
    output = result_to_json(result, scenario.class_names)
    output.update(
        model=str(model_path),
        precision=model.metadata.get("precision"),
        postprocess=model.postprocess,
        task=task,
        classes=[scenario.class_names[c] for c in chosen],
        provider=model.provider,
    )
    return output
