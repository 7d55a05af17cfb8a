"""clod's embedded default benchmark: a procedurally generated detection dataset.

The dataset is made by clod itself, deterministically from a seed, so every experiment,
test and notebook can run without downloading anything. Each class is a coloured,
textured shape; images are small and cluttered so a tiny detector has to learn shape,
colour and texture together, yet reaches a useful mAP within minutes on a CPU.

It is written in VOC layout *and* as COCO json, so both of clod's readers are exercised
by real files::

    ROOT/VOC2007/JPEGImages/<id>.jpg            images, shared by both formats
    ROOT/VOC2007/Annotations/<id>.xml           VOC xml, float boxes, no -1 shift
    ROOT/VOC2007/ImageSets/Main/{trainval,test}.txt
    ROOT/annotations/instances_{trainval,test}.json   COCO; file_name relative to JPEGImages
    ROOT/manifest.json                          spec, generator version, counts, content hash

``ensure_synthetic(data_dir, spec)`` returns ``ROOT = data_dir/<name>-<hash>`` and
generates it only when no complete copy exists. Generation happens in a temporary
sibling directory that is renamed into place, so a crash or a concurrent process never
exposes a half-written dataset.

Every image is drawn from its own random stream seeded by ``(seed, split, index)``, so
the bytes written do not depend on the number of worker processes.

Modules, one job each: :mod:`~clod.data.synthetic.spec` (the spec, presets, class looks),
:mod:`~clod.data.synthetic.shapes` (shape geometry and rasterising),
:mod:`~clod.data.synthetic.render` (drawing one image), :mod:`~clod.data.synthetic.writers`
(the file formats), :mod:`~clod.data.synthetic.generate` (a whole dataset, in worker
processes), :mod:`~clod.data.synthetic.cache` (reuse and atomic publishing),
:mod:`~clod.data.synthetic.preview` (a contact sheet) and :mod:`~clod.data.synthetic.cli`.
"""

from __future__ import annotations

from clod.data.synthetic.cache import ensure_synthetic, load_manifest, synthetic_root
from clod.data.synthetic.cli import main
from clod.data.synthetic.generate import generate_synthetic, verify_synthetic
from clod.data.synthetic.preview import render_preview
from clod.data.synthetic.render import SyntheticImage, SyntheticObject, render_synthetic_image
from clod.data.synthetic.shapes import _SHAPE_BUILDERS, _place_shape, _rasterise
from clod.data.synthetic.spec import (
    GENERATOR_VERSION,
    PRESETS,
    SPLITS,
    SYNTHETIC,
    SYNTHETIC_TINY,
    VOC_CLASSES,
    ClassAppearance,
    SyntheticSpec,
    class_appearances,
    synthetic_preset,
)
from clod.data.synthetic.writers import coco_category_id

__all__ = [
    "GENERATOR_VERSION",
    "PRESETS",
    "SPLITS",
    "SYNTHETIC",
    "SYNTHETIC_TINY",
    "VOC_CLASSES",
    "_SHAPE_BUILDERS",
    "ClassAppearance",
    "SyntheticImage",
    "SyntheticObject",
    "SyntheticSpec",
    "_place_shape",
    "_rasterise",
    "class_appearances",
    "coco_category_id",
    "ensure_synthetic",
    "generate_synthetic",
    "load_manifest",
    "main",
    "render_preview",
    "render_synthetic_image",
    "synthetic_preset",
    "synthetic_root",
    "verify_synthetic",
]
