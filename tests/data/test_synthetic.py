"""The embedded synthetic benchmark: determinism, caching, atomic publishing, file formats.

Annotation files are parsed here with xml.etree and json directly, independently of
clod's readers, so a reader bug cannot hide a generator bug (or the other way round).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from xml.etree import ElementTree

import cv2
import numpy as np
import pytest

from clod.data.synthetic import (
    _SHAPE_BUILDERS,
    SPLITS,
    SYNTHETIC,
    SYNTHETIC_TINY,
    VOC_CLASSES,
    SyntheticSpec,
    _place_shape,
    _rasterise,
    class_appearances,
    ensure_synthetic,
    load_manifest,
    render_synthetic_image,
    synthetic_preset,
    synthetic_root,
    verify_synthetic,
)

REPO_ROOT = Path(__file__).resolve().parents[2]

# All 20 VOC classes but few images: every per-class guarantee is checked on the real
# class list while generation stays well under a second.
SMALL_VOC = replace(SYNTHETIC, name="synthetic_small", num_trainval=60, num_test=24)


def file_digests(root: Path) -> dict[str, str]:
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def work_dirs(data_dir: Path) -> list[Path]:
    return sorted(p for p in data_dir.iterdir() if ".tmp-" in p.name or ".trash-" in p.name)


def run_python(code: str, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.fixture(scope="module")
def small_voc_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_synthetic(tmp_path_factory.mktemp("small_voc"), SMALL_VOC)


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_synthetic(tmp_path_factory.mktemp("tiny"), SYNTHETIC_TINY)


# ------------------------------------------------------------------ determinism


def test_same_spec_gives_identical_bytes_for_any_worker_count(tmp_path: Path) -> None:
    serial = ensure_synthetic(tmp_path / "serial", SYNTHETIC_TINY, workers=1)
    parallel = ensure_synthetic(tmp_path / "parallel", SYNTHETIC_TINY, workers=2)
    assert serial.name == parallel.name
    serial_files, parallel_files = file_digests(serial), file_digests(parallel)
    assert serial_files == parallel_files
    jpegs = [p for p in serial_files if p.endswith(".jpg")]
    assert len(jpegs) == SYNTHETIC_TINY.num_trainval + SYNTHETIC_TINY.num_test
    assert verify_synthetic(serial)


def test_different_seed_gives_different_directory_and_images(tmp_path: Path) -> None:
    first = ensure_synthetic(tmp_path, SYNTHETIC_TINY)
    reseeded = ensure_synthetic(tmp_path, replace(SYNTHETIC_TINY, seed=1))
    assert first != reseeded
    first_manifest, reseeded_manifest = load_manifest(first), load_manifest(reseeded)
    assert first_manifest is not None and reseeded_manifest is not None
    assert first_manifest["content_hash"] != reseeded_manifest["content_hash"]
    image = "VOC2007/JPEGImages/000001.jpg"
    assert (first / image).read_bytes() != (reseeded / image).read_bytes()


def test_rendering_does_not_depend_on_what_was_rendered_before() -> None:
    direct = render_synthetic_image(SYNTHETIC, "test", 7)
    for index in range(3):
        render_synthetic_image(SYNTHETIC, "test", index)
    again = render_synthetic_image(SYNTHETIC, "test", 7)
    assert np.array_equal(direct.image, again.image)
    assert direct.objects == again.objects
    # the split is part of the seed: same index, other split, other image
    other_split = render_synthetic_image(SYNTHETIC, "trainval", 7)
    assert direct.image.shape != other_split.image.shape or not np.array_equal(
        direct.image, other_split.image
    )


def test_parallel_generation_works_from_a_stdin_script(tmp_path: Path) -> None:
    # multiprocessing's spawn would re-run the caller's main module, which a script read
    # from stdin (or a notebook) does not have; the workers must not depend on it
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from clod.data.synthetic import SYNTHETIC_TINY, ensure_synthetic\n"
        "print(ensure_synthetic(Path(sys.argv[1]), SYNTHETIC_TINY, workers=2))\n"
    )
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])
    )
    done = subprocess.run(
        [sys.executable, "-", str(tmp_path)],
        input=code,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    root = Path(done.stdout.strip())
    assert root == synthetic_root(tmp_path, SYNTHETIC_TINY)
    assert verify_synthetic(root)


# ----------------------------------------------------------------------- caching


def test_second_call_reuses_without_rewriting(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = ensure_synthetic(tmp_path, SYNTHETIC_TINY)
    assert root == synthetic_root(tmp_path, SYNTHETIC_TINY)
    assert root.name.startswith("synthetic_tiny-")
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    time.sleep(0.01)  # so a rewrite would show up in the nanosecond mtimes
    with caplog.at_level(logging.INFO, logger="clod.data.synthetic"):
        again = ensure_synthetic(tmp_path, SyntheticSpec.from_config({"preset": "synthetic_tiny"}))
    assert again == root
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before
    assert any("reused" in r.getMessage() for r in caplog.records)
    assert not any("generated" in r.getMessage() for r in caplog.records)


def test_incomplete_directory_at_the_final_name_is_replaced(tmp_path: Path) -> None:
    root = synthetic_root(tmp_path, SYNTHETIC_TINY)
    (root / "VOC2007" / "JPEGImages").mkdir(parents=True)
    (root / "VOC2007" / "JPEGImages" / "stray.jpg").write_bytes(b"half a file")
    assert ensure_synthetic(tmp_path, SYNTHETIC_TINY) == root
    assert not (root / "VOC2007" / "JPEGImages" / "stray.jpg").exists()
    assert verify_synthetic(root)
    assert work_dirs(tmp_path) == []


def test_manifest_of_another_spec_is_not_reused(tmp_path: Path) -> None:
    root = ensure_synthetic(tmp_path, SYNTHETIC_TINY)
    manifest_path = root / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["spec"]["seed"] = 99  # as if another spec's files sat under this name
    manifest_path.write_text(json.dumps(manifest))
    assert ensure_synthetic(tmp_path, SYNTHETIC_TINY) == root
    assert load_manifest(root)["spec"]["seed"] == SYNTHETIC_TINY.seed  # type: ignore[index]
    assert verify_synthetic(root)


# --------------------------------------------------------------- atomic publishing

KILLABLE_SPEC = replace(SYNTHETIC_TINY, name="killable", num_trainval=1500, num_test=16)

_GENERATE_CODE = """
import logging, sys
from dataclasses import replace
from pathlib import Path
from clod.data.synthetic import SYNTHETIC_TINY, ensure_synthetic
logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
spec = replace(SYNTHETIC_TINY, name=sys.argv[2], num_trainval=int(sys.argv[3]), num_test=16)
print("ROOT", ensure_synthetic(Path(sys.argv[1]), spec, workers=1), flush=True)
"""


def test_leftover_of_a_killed_run_does_not_break_the_next_call(tmp_path: Path) -> None:
    process = run_python(_GENERATE_CODE, str(tmp_path), KILLABLE_SPEC.name, "1500")
    try:
        deadline = time.monotonic() + 60
        while True:
            leftovers = work_dirs(tmp_path) if tmp_path.exists() else []
            images = [p for d in leftovers for p in (d / "VOC2007" / "JPEGImages").glob("*.jpg")]
            if len(images) >= 20:
                break
            assert process.poll() is None, f"generator ended early: {process.communicate()[0]}"
            assert time.monotonic() < deadline, "the generator never started writing"
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL
    root = synthetic_root(tmp_path, KILLABLE_SPEC)
    assert not root.exists(), "a half-written dataset must never be visible"
    assert len(work_dirs(tmp_path)) == 1

    # a work dir of a live process (this one) must be left alone
    live_work_dir = tmp_path / f".{root.name}.tmp-{socket.gethostname()}-{os.getpid()}-feedbeef"
    live_work_dir.mkdir()

    assert ensure_synthetic(tmp_path, KILLABLE_SPEC) == root
    assert verify_synthetic(root)
    assert work_dirs(tmp_path) == [live_work_dir]


def test_concurrent_generators_agree_on_one_dataset(tmp_path: Path) -> None:
    processes = [run_python(_GENERATE_CODE, str(tmp_path), "raced", "300") for _ in range(2)]
    outputs = [p.communicate(timeout=120)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    roots = {
        line.split(" ", 1)[1]
        for out in outputs
        for line in out.splitlines()
        if line.startswith("ROOT ")
    }
    assert len(roots) == 1
    root = Path(roots.pop())
    assert verify_synthetic(root)
    # only one of them may have published; the other reused (during or after the race)
    assert sum("generated in" in out for out in outputs) == 1, outputs
    assert [p.name for p in tmp_path.iterdir()] == [root.name]


# ------------------------------------------------------------------ file formats


def read_voc(root: Path, split: str) -> dict[str, dict]:
    voc = root / "VOC2007"
    ids = (voc / "ImageSets" / "Main" / f"{split}.txt").read_text().split()
    images = {}
    for image_id in ids:
        tree = ElementTree.parse(voc / "Annotations" / f"{image_id}.xml").getroot()
        objects = []
        for obj in tree.iter("object"):
            box = obj.find("bndbox")
            assert box is not None
            coords = [float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]  # type: ignore[arg-type]
            objects.append((obj.findtext("name"), *coords, int(obj.findtext("difficult"))))  # type: ignore[arg-type]
        images[image_id] = {
            "filename": tree.findtext("filename"),
            "width": int(tree.findtext("size/width")),  # type: ignore[arg-type]
            "height": int(tree.findtext("size/height")),  # type: ignore[arg-type]
            "depth": int(tree.findtext("size/depth")),  # type: ignore[arg-type]
            "objects": sorted(objects),
        }
    return images


def read_coco(root: Path, split: str) -> tuple[dict[str, dict], list[dict]]:
    document = json.loads((root / "annotations" / f"instances_{split}.json").read_text())
    names = {c["id"]: c["name"] for c in document["categories"]}
    images = {}
    by_id = {}
    for image in document["images"]:
        entry = {
            "file_name": image["file_name"],
            "width": image["width"],
            "height": image["height"],
            "objects": [],
        }
        images[Path(image["file_name"]).stem] = by_id[image["id"]] = entry
    for ann in document["annotations"]:
        x, y, w, h = ann["bbox"]
        assert ann["iscrowd"] == 0
        assert ann["area"] == pytest.approx(w * h, abs=0.01)
        by_id[ann["image_id"]]["objects"].append(
            (names[ann["category_id"]], x, y, x + w, y + h, ann["difficult"])
        )
    for entry in images.values():
        entry["objects"].sort()
    return images, document["categories"]


@pytest.mark.parametrize("root_fixture", ["tiny_root", "small_voc_root"])
def test_voc_and_coco_describe_the_same_boxes(
    root_fixture: str, request: pytest.FixtureRequest
) -> None:
    root: Path = request.getfixturevalue(root_fixture)
    all_ids: set[str] = set()
    for split in SPLITS:
        voc, coco = read_voc(root, split), read_coco(root, split)[0]
        assert list(voc) == sorted(voc) and set(voc) == set(coco)
        assert not all_ids & set(voc), "the splits share JPEGImages, so ids must be unique"
        all_ids |= set(voc)
        for image_id, expected in voc.items():
            described = coco[image_id]
            assert expected["filename"] == described["file_name"] == f"{image_id}.jpg"
            assert (expected["width"], expected["height"]) == (
                described["width"],
                described["height"],
            )
            pixels = cv2.imread(str(root / "VOC2007" / "JPEGImages" / described["file_name"]))
            assert pixels.shape == (expected["height"], expected["width"], expected["depth"])
            assert len(expected["objects"]) == len(described["objects"]) >= 1
            for from_xml, from_json in zip(expected["objects"], described["objects"], strict=True):
                assert from_xml[0] == from_json[0] and from_xml[5] == from_json[5]
                assert from_xml[1:5] == pytest.approx(from_json[1:5], abs=1e-6)
                _, xmin, ymin, xmax, ymax, _ = from_xml
                assert 0 <= xmin < xmax <= expected["width"]
                assert 0 <= ymin < ymax <= expected["height"]


def test_every_class_appears_in_both_splits(small_voc_root: Path) -> None:
    manifest = load_manifest(small_voc_root)
    assert manifest is not None
    for split in SPLITS:
        present = {
            obj[0] for image in read_voc(small_voc_root, split).values() for obj in image["objects"]
        }
        assert present == set(VOC_CLASSES)
        assert all(count > 0 for count in manifest["splits"][split]["images_per_class"].values())


def test_category_ids_are_gapped_and_follow_class_order(small_voc_root: Path) -> None:
    for split in SPLITS:
        _, categories = read_coco(small_voc_root, split)
        assert [c["name"] for c in categories] == list(VOC_CLASSES)
        ids = [c["id"] for c in categories]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        assert ids != list(range(ids[0], ids[0] + len(ids))), "ids must not be contiguous"


def test_manifest_counts_match_the_files(small_voc_root: Path) -> None:
    manifest = load_manifest(small_voc_root)
    assert manifest is not None
    assert manifest["spec"] == SMALL_VOC.as_dict()
    for split in SPLITS:
        images = read_voc(small_voc_root, split)
        stats = manifest["splits"][split]
        assert stats["images"] == len(images) == SMALL_VOC.num_images(split)
        assert stats["boxes"] == sum(len(i["objects"]) for i in images.values())
        assert stats["difficult_boxes"] == sum(o[5] for i in images.values() for o in i["objects"])


def test_presets_and_config_construction() -> None:
    assert SYNTHETIC.class_names == VOC_CLASSES
    assert (SYNTHETIC.num_trainval, SYNTHETIC.num_test) == (2000, 500)
    spec = SyntheticSpec.from_config(
        {
            "preset": "synthetic_tiny",
            "seed": 3,
            "class_names": ["a", "b"],
            "image_size_range": [70, 80],
        }
    )
    assert spec == synthetic_preset(
        "synthetic_tiny", seed=3, class_names=("a", "b"), image_size_range=(70, 80)
    )
    assert spec.cache_key != SYNTHETIC_TINY.cache_key
    assert hash(spec) == hash(replace(spec))
    with pytest.raises(TypeError):
        SyntheticSpec.from_config({"num_images": 5})
    with pytest.raises(ValueError, match="below the number of classes"):
        SyntheticSpec(num_test=19)
    with pytest.raises(KeyError):
        synthetic_preset("voc")


# --------------------------------------------------------------- what is drawn


def test_every_class_has_its_own_look_and_no_cue_alone_identifies_it() -> None:
    looks = list(class_appearances(VOC_CLASSES).values())
    assert len(set(looks)) == len(VOC_CLASSES)
    for cue in ("shape", "colour", "texture"):
        values = [getattr(look, cue) for look in looks]
        assert max(values.count(v) for v in values) >= 2, f"{cue} alone would separate all classes"


@pytest.mark.parametrize("shape", sorted(_SHAPE_BUILDERS))
def test_box_is_the_tight_extent_of_the_drawn_shape(shape: str) -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        half_size = (rng.uniform(6, 40), rng.uniform(6, 40))
        centre = (rng.uniform(50, 60), rng.uniform(50, 60))
        geometry = _place_shape(shape, centre, half_size, rng.uniform(-0.4, 0.4))
        coverage, left, top = _rasterise(geometry)
        rows, cols = np.nonzero(coverage >= 128)  # pixels at least half covered
        drawn = np.array(
            [left + cols.min(), top + rows.min(), left + cols.max() + 1, top + rows.max() + 1]
        )
        box = np.array(geometry.box)
        outward = np.array(
            [box[0] - drawn[0], box[1] - drawn[1], drawn[2] - box[2], drawn[3] - box[3]]
        )
        # half a pixel of quantisation plus a sample: nothing drawn pokes out of the box
        assert outward.max() <= 0.5 + 1 / 4, (shape, drawn, box)
        # and the box is not loose: only thin tips (star points, crescent horns) fall
        # below half coverage, so the drawn extent reaches close to every side
        size = np.array([box[2] - box[0], box[3] - box[1]] * 2)
        assert np.all(outward >= -0.1 * size - 0.6), (shape, drawn, box)


def test_class_frequency_and_difficult_fraction_are_moderate() -> None:
    images_with_class = np.zeros(len(VOC_CLASSES))
    boxes = difficult = 0
    num_images = 300
    for index in range(num_images):
        objects = render_synthetic_image(SYNTHETIC, "trainval", index).objects
        for label in {o.label for o in objects}:
            images_with_class[label] += 1
        boxes += len(objects)
        difficult += sum(o.difficult for o in objects)
    fraction = images_with_class / num_images
    assert fraction.min() > 0.07 and fraction.max() < 0.22, fraction
    assert 0.01 < difficult / boxes < 0.10
    assert math.isclose(boxes / num_images, 3.0, abs_tol=0.5)
