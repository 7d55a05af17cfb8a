"""An exported detector run by onnxruntime, as a raw-output model clod can evaluate and time.

An ONNX file is data, not code: onnxruntime runs only the standard operators the graph
names (no custom-op library is ever loaded), and the model config in the file's metadata
may build only clod's own classes (:func:`clod.utils.checkpoints.check_targets`), so a
shared file cannot run code when it is loaded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from clod.data.types import Batch
from clod.deploy.onnx_graph import INPUT_NAME, read_metadata
from clod.engine.evaluation import Predict, raw_predictor
from clod.errors import DataError
from clod.models.boxes import to_original
from clod.models.detector import build_detector
from clod.models.head_protocol import DetectionHead
from clod.utils.checkpoints import check_targets

PROVIDER = "CPUExecutionProvider"


def session_options(threads: int | None, spin: bool = False) -> ort.SessionOptions:
    """Full graph optimisation, ``threads`` intra-op threads; idle workers spin or sleep.

    onnxruntime's workers spin after each operator by default, which makes its many small
    int8 operators about 1.4× faster (NanoDet-Plus-m, 192², batch 16), but takes the cores
    from whatever runs next on a shared CPU. Evaluation lets them sleep (``spin=False``);
    the timed runs of the export report spin, in blocks with a pause between runtimes
    (:func:`clod.deploy.report.throughput`).
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    return options


@dataclass
class OnnxDetector:
    """An exported clod model: an onnxruntime session plus what its metadata says."""

    path: Path
    session: ort.InferenceSession
    metadata: dict[str, Any]
    head: DetectionHead  # built from the metadata's model config: decoding only, no weights

    @classmethod
    def load(cls, path: str | Path, threads: int | None = None, spin: bool = False) -> OnnxDetector:
        path = Path(path)
        if not path.is_file():
            raise DataError(f"ONNX model {path} does not exist")
        try:
            session = ort.InferenceSession(
                str(path), session_options(threads, spin), providers=[PROVIDER]
            )
        except Exception as error:  # onnxruntime raises its own exception types
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error)
            raise DataError(f"{path} is not a model onnxruntime can load: {first}") from None
        metadata = read_metadata(session.get_modelmeta().custom_metadata_map)
        for key in ("model", "task", "class_names", "classes", "input_size"):
            if key not in metadata:
                raise DataError(
                    f"{path} was not written by clod.export: its metadata has no clod.{key}"
                )
        check_targets(metadata["model"], "clod.models.", path, "clod.model")
        inputs = [i.name for i in session.get_inputs()]
        if inputs != [INPUT_NAME]:
            raise DataError(f"{path}: expected one input named {INPUT_NAME!r}, found {inputs}")
        head = build_detector(metadata["model"]).head.eval()
        return cls(path, session, metadata, head)

    @property
    def postprocess(self) -> str:
        """``none``: the graph outputs ``raw``; ``graph``: it outputs detections (batch 1)."""
        return str(self.metadata.get("postprocess", "none"))

    def predictor(self, eval_cfg: Mapping[str, Any], classes: Sequence[int]) -> Predict:
        """Detections in original-image pixels per batch, by the run's evaluation rules.

        A raw-output graph is decoded by clod's head with ``eval_cfg``; a graph with its own
        post-processing runs image by image and its boxes are mapped back to the original
        image as clod's decoding maps them.
        """
        if self.postprocess != "graph":
            return raw_predictor(self.head, self, eval_cfg, classes)

        def per_image(batch: Batch) -> list[dict[str, torch.Tensor]]:
            images = batch.images.detach().to(torch.float32).contiguous().numpy()
            detections = []
            for i in range(images.shape[0]):
                boxes, scores, labels = self.session.run(None, {INPUT_NAME: images[i : i + 1]})
                detections.append(
                    {
                        "boxes": to_original(
                            torch.from_numpy(boxes), batch.warps[i], batch.orig_sizes[i]
                        ).float(),
                        "scores": torch.from_numpy(scores),
                        "labels": torch.from_numpy(labels).long(),
                    }
                )
            return detections

        return per_image

    @property
    def provider(self) -> str:
        return self.session.get_providers()[0]

    @property
    def input_size(self) -> tuple[int, int]:
        width, height = self.metadata["input_size"]
        return int(width), int(height)

    def run(self, images: np.ndarray) -> np.ndarray:
        """The raw output for a float32 N×3×H×W array."""
        return self.session.run(None, {INPUT_NAME: images})[0]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        array = images.detach().to(torch.float32).contiguous().numpy()
        return torch.from_numpy(self.run(array))
