"""Where a run's labelled images come from: image folders, CSV files and CoOp split files (``--data``).

Every loader validates its input up front and raises :class:`RingfoldError` with one line
naming the file and the fix, so a bad dataset fails in the first second rather than mid-epoch.
Class indices are always assigned from a sorted, reproducible order; folders and CSVs without
a split are split at random (stratified, seeded). The types and the sampling are in ``data.py``.
"""

from __future__ import annotations

import csv
import json
import random
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ringfold.errors import FieldError, RingfoldError
from ringfold.runtime.pixels.images import IMAGE_EXTENSIONS, list_images
from ringfold.runtime.vocab.class_list import check_class_names

from .data import SPLIT_NAMES, LabelledSplits, Sample, read_data_json, sorted_samples, subsample_classes

_MAX_NAMED = 3  # how many offending files an error message names before summarising


def _name_some(items: list[Any]) -> str:
    shown = ", ".join(str(i) for i in items[:_MAX_NAMED])
    return shown + (", ..." if len(items) > _MAX_NAMED else "")


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise RingfoldError(f"{name}={value} is out of range: use a value in [0, 1)")
    if val_fraction + test_fraction >= 1.0:
        raise RingfoldError(
            f"val_fraction + test_fraction = {val_fraction + test_fraction:g} leaves no training images: "
            "make their sum smaller than 1"
        )


def _random_split(
    samples: list[Sample], val_fraction: float, test_fraction: float, seed: int
) -> tuple[list[Sample], list[Sample], list[Sample]]:
    """Stratified split so every class keeps at least one training image, whatever the fractions."""
    by_label: dict[int, list[Sample]] = defaultdict(list)
    for s in sorted_samples(samples):
        by_label[s.label].append(s)
    train: list[Sample] = []
    val: list[Sample] = []
    test: list[Sample] = []
    for label, group in sorted(by_label.items()):
        # One RNG per class: a class's split does not change when other classes are added or removed.
        random.Random(f"split:{seed}:{label}").shuffle(group)
        n = len(group)
        n_test = int(n * test_fraction + 0.5)
        n_val = int(n * val_fraction + 0.5)
        while n_test + n_val >= n and n_test + n_val > 0:
            if n_test >= n_val:
                n_test -= 1
            else:
                n_val -= 1
        test += group[:n_test]
        val += group[n_test : n_test + n_val]
        train += group[n_test + n_val :]
    return sorted_samples(train), sorted_samples(val), sorted_samples(test)


def _check_class_count(classnames: list[str], where: Path) -> None:
    """At least two classes, and names the bundle's labels.json will take (the runtime's class-name rule:
    no control, invisible or separator character, no two equal to the tokenizer) — before any training."""
    if not classnames:
        raise RingfoldError(f"{where} has no classes: give it one sub-folder (or label) per class, at least two")
    if len(classnames) == 1:
        raise RingfoldError(
            f"{where} has one class ({classnames[0]!r}): a classifier needs at least two, add another class"
        )
    check_class_names(classnames, str(where))


def _check_files_exist(paths: Iterable[Path], listed_in: Path, under: Path) -> None:
    unique = list(dict.fromkeys(paths))
    missing = [p for p in unique if not p.is_file()]
    if missing:
        rel = [p.relative_to(under) if p.is_relative_to(under) else p for p in missing]
        raise RingfoldError(
            f"{len(missing)} of {len(unique)} images listed in {listed_in} are missing under {under} "
            f"(e.g. {_name_some(rel)}): fix the paths or point --image-root at the folder they are "
            "relative to"
        )


# --------------------------------------------------------------------------- image folders


def _class_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _folder_classname(folder: str) -> str:
    return folder.replace("_", " ").strip()


def _images_in(class_dir: Path) -> list[Path]:
    # The runtime's own listing, so a folder yields the same images at training and inference time.
    return list_images([class_dir])


def _scan_class_folders(root: Path, class_index: dict[str, int]) -> list[Sample]:
    samples = []
    for class_dir in _class_dirs(root):
        if class_dir.name not in class_index:
            raise RingfoldError(
                f"class folder {class_dir} has no counterpart in the train split: add it to train/ or remove it"
            )
        images = _images_in(class_dir)
        if not images:
            raise RingfoldError(
                f"empty class '{class_dir.name}' in {root}: add images or remove the folder "
                f"(image types: {', '.join(sorted(IMAGE_EXTENSIONS))})"
            )
        samples += [Sample(p, class_index[class_dir.name]) for p in images]
    return sorted_samples(samples)


def _has_split_folders(root: Path) -> bool:
    return (root / "train").is_dir() and ((root / "val").is_dir() or (root / "test").is_dir())


def from_image_folder(
    root: str | Path, val_fraction: float = 0.0, test_fraction: float = 0.2, seed: int = 0
) -> LabelledSplits:
    """Read ``root/<class>/<images>``, or ``root/{train,val,test}/<class>/<images>`` when splits are given.

    The fractions only apply to the flat layout: given split folders are used as they are, because
    a user who separated train from test did it on purpose (e.g. to avoid near-duplicates leaking).
    """
    root = Path(root)
    if not root.is_dir():
        raise RingfoldError(f"image folder {root} does not exist: pass a directory with one sub-folder per class")

    if _has_split_folders(root):
        train_root = root / "train"
        folders = [d.name for d in _class_dirs(train_root)]
        classnames = [_folder_classname(f) for f in folders]
        _check_class_count(classnames, train_root)
        index = {f: i for i, f in enumerate(folders)}
        splits = {
            name: _scan_class_folders(root / name, index) if (root / name).is_dir() else [] for name in SPLIT_NAMES
        }
        present = [name for name in SPLIT_NAMES if (root / name).is_dir()]
        return LabelledSplits(
            classnames,
            splits["train"],
            splits["val"],
            splits["test"],
            source=f"image folder {root} ({'/'.join(present)} folders)",
        )

    _check_fractions(val_fraction, test_fraction)
    folders = [d.name for d in _class_dirs(root)]
    classnames = [_folder_classname(f) for f in folders]
    _check_class_count(classnames, root)
    samples = _scan_class_folders(root, {f: i for i, f in enumerate(folders)})
    train, val, test = _random_split(samples, val_fraction, test_fraction, seed)
    return LabelledSplits(
        classnames,
        train,
        val,
        test,
        source=f"image folder {root} (random split val={val_fraction:g} test={test_fraction:g} seed={seed})",
    )


# --------------------------------------------------------------------------- CSV

_SPLIT_ALIASES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


def from_csv(
    csv_path: str | Path, val_fraction: float = 0.0, test_fraction: float = 0.2, seed: int = 0
) -> LabelledSplits:
    """Read a ``path,label[,split]`` CSV; paths are relative to the CSV's folder so the set can be moved.

    Without a ``split`` column the rows are split at random like a flat image folder.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise RingfoldError(f"CSV file {csv_path} does not exist: pass a CSV with a 'path,label' header")
    # utf-8-sig: spreadsheets often prepend a byte-order mark that would otherwise corrupt the first header.
    with csv_path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [(h or "").strip().lower() for h in (reader.fieldnames or [])]
        if "path" not in header or "label" not in header:
            raise RingfoldError(
                f"{csv_path} has header {','.join(header) or '(empty)'}: the first line must be "
                "'path,label' (optionally ',split')"
            )
        reader.fieldnames = header
        has_split = "split" in header
        rows: list[tuple[Path, str, str | None]] = []
        for line, row in enumerate(reader, start=2):
            path = (row.get("path") or "").strip()
            label = (row.get("label") or "").strip()
            if not path or not label:
                raise RingfoldError(f"{csv_path} line {line}: empty path or label: fill it in or remove the row")
            split = None
            if has_split:
                raw = (row.get("split") or "").strip().lower()
                split = _SPLIT_ALIASES.get(raw)
                if split is None:
                    raise RingfoldError(
                        f"{csv_path} line {line}: split '{raw}' is not one of train, val, test: fix the row"
                    )
            rows.append((csv_path.parent / path, label, split))

    if not rows:
        raise RingfoldError(f"{csv_path} has no rows: add one 'path,label' row per image")
    classnames = sorted({label for _, label, _ in rows})
    _check_class_count(classnames, csv_path)
    _check_files_exist((p for p, _, _ in rows), csv_path, csv_path.parent)
    index = {name: i for i, name in enumerate(classnames)}

    if has_split:
        by_split: dict[str, list[Sample]] = {name: [] for name in SPLIT_NAMES}
        for path, label, split in rows:
            by_split[split].append(Sample(path, index[label]))  # type: ignore[index]
        return LabelledSplits(
            classnames,
            *(sorted_samples(by_split[name]) for name in SPLIT_NAMES),
            source=f"CSV {csv_path} (split column)",
        )
    _check_fractions(val_fraction, test_fraction)
    train, val, test = _random_split(
        [Sample(p, index[label]) for p, label, _ in rows], val_fraction, test_fraction, seed
    )
    return LabelledSplits(
        classnames,
        train,
        val,
        test,
        source=f"CSV {csv_path} (random split val={val_fraction:g} test={test_fraction:g} seed={seed})",
    )


# --------------------------------------------------------------------------- CoOp / Dassl split files


def _coop_entries(data: Any, split_json: Path) -> dict[str, list[tuple[str, int, str]]]:
    if not isinstance(data, dict) or "train" not in data:
        raise RingfoldError(
            f'{split_json} is not a CoOp split file: expected {{"train": [[path, label, classname], ...], '
            '"val": [...], "test": [...]}'
        )
    entries: dict[str, list[tuple[str, int, str]]] = {}
    for name in SPLIT_NAMES:
        items = data.get(name, [])
        if not isinstance(items, list):
            raise RingfoldError(f"{split_json}: '{name}' must be a list of [path, label, classname] entries")
        parsed = []
        for i, item in enumerate(items):
            ok = (
                isinstance(item, list | tuple)
                and len(item) == 3
                and isinstance(item[0], str)
                and isinstance(item[1], int)
                and not isinstance(item[1], bool)
                and item[1] >= 0
                and isinstance(item[2], str)
            )
            if not ok:
                raise RingfoldError(
                    f"{split_json}: {name}[{i}] = {json.dumps(item)[:80]} is not "
                    "[path, label >= 0, classname]: fix the entry"
                )
            parsed.append((item[0], item[1], item[2]))
        entries[name] = parsed
    return entries


def from_coop_split(split_json: str | Path, image_root: str | Path) -> LabelledSplits:
    """Read a CoOp/Dassl ``split_zhou_*.json`` so results compare with the published few-shot benchmarks."""
    split_json, image_root = Path(split_json), Path(image_root)
    entries = _coop_entries(read_data_json(split_json, "CoOp split file"), split_json)

    names_by_label: dict[int, str] = {}
    for name in SPLIT_NAMES:
        for path, label, classname in entries[name]:
            known = names_by_label.setdefault(label, classname)
            if known != classname:
                raise RingfoldError(
                    f"{split_json}: label {label} is '{known}' in one entry but '{classname}' for {path}: "
                    "each label must map to one class name"
                )
    n = max(names_by_label, default=-1) + 1
    gaps = [i for i in range(n) if i not in names_by_label]
    if gaps:
        raise RingfoldError(
            f"{split_json}: labels must run 0..{n - 1} but {_name_some(gaps)} never occur: renumber the labels"
        )
    # Dassl keeps underscores in names (e.g. 'american_bulldog'); CoOp strips them when building prompts.
    classnames = [names_by_label[i].replace("_", " ") for i in range(n)]
    if len(set(classnames)) != n:
        dupes = sorted({c for c in classnames if classnames.count(c) > 1})
        raise RingfoldError(f"{split_json}: class name(s) {_name_some(dupes)} used by several labels: rename them")
    _check_class_count(classnames, split_json)
    if not image_root.is_dir():
        raise FieldError("image_root", f"{image_root} (for {split_json}) does not exist; point it at the image folder")
    _check_files_exist((image_root / p for name in SPLIT_NAMES for p, _, _ in entries[name]), split_json, image_root)
    splits = {name: sorted_samples(Sample(image_root / p, lab) for p, lab, _ in entries[name]) for name in SPLIT_NAMES}
    return LabelledSplits(
        classnames,
        splits["train"],
        splits["val"],
        splits["test"],
        source=f"CoOp split {split_json} (images under {image_root})",
    )


def _guess_image_root(split_json: Path) -> Path:
    """Dassl keeps images in a sibling folder (``images/``, ``101_ObjectCategories/``, ...); find it."""
    base = split_json.parent
    try:
        data = json.loads(split_json.read_text(encoding="utf-8"))
        probe = next(item[0] for name in SPLIT_NAMES for item in data.get(name, []))
    except Exception:  # unreadable or empty: from_coop_split reports it properly
        return base
    candidates = [base, base / "images"]
    candidates += [d for d in sorted(base.iterdir()) if d.is_dir() and d not in candidates]
    for candidate in candidates:
        if (candidate / probe).is_file():
            return candidate
    return base


def load_splits(data: str | Path, *, image_root: str | Path | None = None, seed: int = 0) -> LabelledSplits:
    """Pick the loader from what ``data`` is, so one CLI flag accepts every supported dataset format."""
    data = Path(data)
    if data.is_dir():
        return from_image_folder(data, seed=seed)
    if not data.exists():
        raise RingfoldError(f"dataset {data} does not exist: pass an image folder, a .csv or a CoOp split .json")
    suffix = data.suffix.lower()
    if suffix == ".csv":
        return from_csv(data, seed=seed)
    if suffix == ".json":
        return from_coop_split(data, Path(image_root) if image_root is not None else _guess_image_root(data))
    raise RingfoldError(f"dataset {data} is a '{suffix}' file: pass an image folder, a .csv or a CoOp split .json")


def load_run_splits(
    data: str | Path, *, image_root: str | Path | None = None, seed: int = 0, classes: str = "all"
) -> LabelledSplits:
    """The split a run uses: ``data`` split with ``seed`` (flat folders and CSVs are split at random from it),
    then cut to ``classes`` (all | base | new). Training, evaluation and export all draw it here, so they agree."""
    splits = load_splits(data, image_root=image_root, seed=seed)
    return splits if classes == "all" else subsample_classes(splits, classes)  # type: ignore[arg-type]
