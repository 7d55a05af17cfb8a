"""Bad input to the deployment commands: one line naming what is wrong, exit status 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx

from tests.deploy.conftest import clod_command


def assert_user_error(result, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    for fragment in fragments:
        assert fragment in lines[0]


def with_metadata(source: Path, target: Path, key: str, change) -> Path:
    """A copy of an exported file whose ``clod.<key>`` metadata is ``change(old value)``."""
    proto = onnx.load(source)
    for entry in proto.metadata_props:
        if entry.key == f"clod.{key}":
            entry.value = json.dumps(change(json.loads(entry.value)))
    onnx.save(proto, target)
    return target


def test_a_run_without_checkpoints(trained_run: Path, data_dir: Path, tmp_path: Path) -> None:
    empty = tmp_path / "run"
    empty.mkdir()
    shutil.copy(trained_run / "config.yaml", empty / "config.yaml")
    result = clod_command(data_dir, "clod.export", f"run={empty}")
    assert_user_error(result, "no finished task checkpoint")
    assert not (empty / "export").exists()


def test_a_task_that_does_not_exist(trained_run: Path, data_dir: Path) -> None:
    result = clod_command(data_dir, "clod.export", f"run={trained_run}", "task=7")
    assert_user_error(result, "task_7.pt does not exist", "task_0")


def test_an_unwritable_out(trained_run: Path, data_dir: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    result = clod_command(data_dir, "clod.export", f"run={trained_run}", f"out={blocker / 'x'}")
    assert_user_error(result, "is not a writable directory")


def test_unknown_keys_and_values(trained_run: Path, data_dir: Path) -> None:
    assert_user_error(clod_command(data_dir, "clod.export", "run"), "expected key=value")
    assert_user_error(
        clod_command(data_dir, "clod.export", f"run={trained_run}", "fmt=int8"), "unknown key 'fmt'"
    )
    assert_user_error(
        clod_command(
            data_dir, "clod.export", f"run={trained_run}", "format=tflite", "evaluate=false"
        ),
        "format='tflite'",
    )
    assert_user_error(clod_command(data_dir, "clod.export", "task=0"), "missing run=")


def test_evaluate_refuses_a_file_that_is_not_a_model(
    trained_run: Path, data_dir: Path, tmp_path: Path
) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00not a model")
    result = clod_command(data_dir, "clod.evaluate", f"model={junk}", f"run={trained_run}")
    assert_user_error(result, str(junk), "onnxruntime")


def test_a_shared_model_cannot_name_code_to_build(
    exported: tuple[Path, dict], trained_run: Path, data_dir: Path, tmp_path: Path
) -> None:
    """The model config in the metadata may only build clod's classes."""
    out, _ = exported
    crafted = with_metadata(
        out / "task_0.onnx", tmp_path / "crafted.onnx", "model",
        lambda config: {**config, "_target_": "pathlib.Path.touch"},
    )  # fmt: skip
    result = clod_command(data_dir, "clod.evaluate", f"model={crafted}", f"run={trained_run}")
    assert_user_error(result, "pathlib.Path.touch", "refused")


def test_a_model_for_other_classes(
    exported: tuple[Path, dict], trained_run: Path, data_dir: Path, tmp_path: Path
) -> None:
    out, _ = exported
    other = with_metadata(
        out / "task_0.onnx", tmp_path / "other.onnx", "class_names",
        lambda _: ["cat", "dog", "cow", "sheep"],
    )  # fmt: skip
    result = clod_command(data_dir, "clod.evaluate", f"model={other}", f"run={trained_run}")
    assert_user_error(result, "was exported for classes")
