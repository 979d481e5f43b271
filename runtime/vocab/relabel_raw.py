"""``ringfold relabel`` for a bundle exported with ``--raw-input``: the raw models and the DeepStream folder.

The raw-pixel models carry the same baked head as ``model.onnx`` (only their
first Conv differs), and ``deepstream/`` names the classes in ``labels.txt``.
Copying either unchanged into a relabelled bundle would ship a model and a
label file that disagree with the new head, so both are rebuilt here: the
heads through the same rewrite as the other variants, the folder from the new
labels. The INT8 calibration cache is left out with the DeepStream INT8
configs: its logits scale was measured on the old classes, the same reason
the static int8 variant is dropped. ``ringfold parity`` on the new bundle then
gates the raw models against the recomputed reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ringfold.atomic import write_bytes
from ringfold.errors import BundleError
from ringfold.runtime.bundle.loader import Bundle
from ringfold.runtime.bundle.sections.deepstream import CALIBRATION, FOLDER, deepstream_section
from ringfold.runtime.deploy.deepstream import DeepStreamTarget, deepstream_files, write_folder
from ringfold.runtime.graph.head_rewrite import HeadNotRewritable, rewrite_head

INT8_NOTE = (
    "DeepStream INT8 configs and calibration cache not carried over: the cache's logits scale was measured "
    "on the old classes; re-export with --raw-input for INT8"
)


def raw_files(bundle: Bundle) -> set[str]:
    """The files this module rewrites or rebuilds (so relabel does not copy them unchanged)."""
    raw = bundle.manifest.raw_input
    files = {m.file for m in raw.models.values()} if raw is not None else set()
    if raw is not None and raw.qdq is not None:  # dropped: its int8 head was quantised on the old classes
        files.add(raw.qdq.file)
    return files | set(bundle.manifest.deepstream_files)


def relabel_raw_input(
    bundle: Bundle, out: Path, weight: np.ndarray, classes: Sequence[str], manifest: dict[str, Any]
) -> list[str]:
    """Rewrite the raw models' heads and rebuild ``deepstream/`` in ``out``; updates ``manifest``; returns notes."""
    raw = bundle.manifest.raw_input
    if raw is None:
        return []
    notes = []
    if isinstance(manifest.get("raw_input"), dict):
        manifest["raw_input"].pop("qdq", None)  # its file is not carried over (see raw_files)
    for model in raw.models.values():
        source = bundle.file(model.file)
        try:
            data = rewrite_head(source.read_bytes(), weight)
        except HeadNotRewritable as exc:
            raise BundleError(f"{source}: {exc}; re-export the bundle with --raw-input") from None
        target = out / model.file
        target.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(target, data)
    float_model = raw.models["float32"].file if "float32" in raw.models else None
    if "deepstream" in manifest and float_model is None:  # nvinfer feeds float: nothing to point the configs at
        del manifest["deepstream"]
    elif "deepstream" in manifest:
        target = DeepStreamTarget(
            onnx_file=f"../{float_model}",
            labels=list(classes),
            size=bundle.manifest.input_size,
            precisions=("fp32", "fp16"),
            title=f"{bundle.manifest.model_name} ({bundle.manifest.weights}), relabelled",
        )
        files = deepstream_files(target)
        (out / FOLDER).mkdir(exist_ok=True)
        write_folder(out / FOLDER, files)
        manifest["deepstream"] = deepstream_section(list(files), None)
        if any(rel.endswith(CALIBRATION) for rel in bundle.manifest.deepstream_files):
            notes.append(INT8_NOTE)
    return notes
