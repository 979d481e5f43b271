"""Labelled few-shot image data: loaders, k-shot sampling, base/new class splits, image checks.

Every loader validates its input up front and raises :class:`RingfoldError` with one line
naming the file and the fix, so a bad dataset fails in the first second rather than mid-epoch.
Class indices are always assigned from a sorted, reproducible order.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import random
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from torch.utils.data import Dataset
from tqdm import tqdm

from ringfold.errors import FieldError, ImageError, RingfoldError
from ringfold.runtime.class_list import check_class_names
from ringfold.runtime.images import IMAGE_EXTENSIONS, list_images, load_image

log = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "val", "test")
DEFAULT_TEMPLATES: tuple[str, ...] = ("a photo of a {}.",)
_PROGRESS_THRESHOLD = 200  # below this a progress bar is more noise than help
_MAX_NAMED = 3  # how many offending files an error message names before summarising


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int


@dataclass
class LabelledSplits:
    classnames: list[str]
    train: list[Sample]
    val: list[Sample]
    test: list[Sample]
    source: str

    def split(self, name: str) -> list[Sample]:
        """Look a split up by the name used in CLI flags and split files."""
        if name not in SPLIT_NAMES:
            raise RingfoldError(f"unknown split '{name}': use one of {', '.join(SPLIT_NAMES)}")
        return getattr(self, name)


# --------------------------------------------------------------------------- helpers


def _sorted_samples(samples: Iterable[Sample]) -> list[Sample]:
    # A canonical order makes every downstream random choice independent of filesystem/CSV order.
    return sorted(samples, key=lambda s: (s.label, str(s.path)))


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
    for s in _sorted_samples(samples):
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
    return _sorted_samples(train), _sorted_samples(val), _sorted_samples(test)


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
    return _sorted_samples(samples)


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
            *(_sorted_samples(by_split[name]) for name in SPLIT_NAMES),
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


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RingfoldError(f"{what} {path} does not exist: check the path") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RingfoldError(f"{path} is not valid JSON ({e}): fix or regenerate the {what}") from None


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
    entries = _coop_entries(_read_json(split_json, "CoOp split file"), split_json)

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
    splits = {name: _sorted_samples(Sample(image_root / p, lab) for p, lab, _ in entries[name]) for name in SPLIT_NAMES}
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


# --------------------------------------------------------------------------- sampling


def sample_k_shot(samples: list[Sample], k: int, seed: int) -> list[Sample]:
    """Draw up to ``k`` samples per class.

    Each class is shuffled by its own RNG seeded from (seed, label) and the first ``k`` kept, so the
    draw does not depend on input order or on other classes, and the 1-shot set is inside the 2-shot set.
    """
    if k < 1:
        raise RingfoldError(f"k={k} shots per class: use k >= 1")
    by_label: dict[int, list[Sample]] = defaultdict(list)
    for s in _sorted_samples(set(samples)):
        by_label[s.label].append(s)
    chosen: list[Sample] = []
    short: list[str] = []
    for label, group in sorted(by_label.items()):
        random.Random(f"kshot:{seed}:{label}").shuffle(group)
        if len(group) < k:
            short.append(f"label {label} ({len(group)})")
        chosen += group[:k]
    if short:
        log.warning(
            "%d class(es) have fewer than k=%d samples, using all they have: %s",
            len(short),
            k,
            ", ".join(short[:10]) + (", ..." if len(short) > 10 else ""),
        )
    return _sorted_samples(chosen)


def subsample_classes(splits: LabelledSplits, which: Literal["all", "base", "new"]) -> LabelledSplits:
    """CoOp's base-to-novel protocol: first ceil(n/2) labels are 'base', the rest 'new', relabelled from 0."""
    if which == "all":
        return splits
    if which not in ("base", "new"):
        raise RingfoldError(f"class subset '{which}' is unknown: use all, base or new")
    n = len(splits.classnames)
    m = math.ceil(n / 2)
    keep = list(range(m)) if which == "base" else list(range(m, n))
    relabel = {old: new for new, old in enumerate(keep)}

    def pick(samples: list[Sample]) -> list[Sample]:
        return [Sample(s.path, relabel[s.label]) for s in samples if s.label in relabel]

    return LabelledSplits(
        classnames=[splits.classnames[i] for i in keep],
        train=pick(splits.train),
        val=pick(splits.val),
        test=pick(splits.test),
        source=f"{splits.source} [{which} classes: {len(keep)} of {n}]",
    )


# --------------------------------------------------------------------------- images


def scan_images(samples: list[Sample], on_bad: Literal["skip", "fail"]) -> list[Sample]:
    """Decode every image once before training, so a corrupt file stops the run now rather than mid-epoch."""
    if on_bad not in ("skip", "fail"):
        raise RingfoldError(f"on_bad='{on_bad}' is unknown: use skip or fail")
    bad: dict[Path, str] = {}
    checked: set[Path] = set()
    for sample in tqdm(samples, desc="checking images", unit="img", disable=len(samples) <= _PROGRESS_THRESHOLD):
        if sample.path in checked:
            continue
        checked.add(sample.path)
        try:
            load_image(sample.path)
        except ImageError as e:
            reason = str(e)
            # load_image's messages already start with the path; don't print it twice.
            bad[sample.path] = reason if str(sample.path) in reason else f"{sample.path}: {reason}"
            log.warning("bad image: %s", bad[sample.path])
    if not bad:
        return list(samples)
    if on_bad == "fail":
        raise RingfoldError(
            f"{len(bad)} of {len(checked)} images cannot be decoded, first {next(iter(bad.values()))} -- "
            "fix or remove the files, or pass --on-bad-image skip to train without them"
        )
    good = [s for s in samples if s.path not in bad]
    log.warning("skipped %d of %d images that cannot be decoded (listed above)", len(bad), len(checked))
    return good


class ImageDataset(Dataset):
    """(image tensor, label) pairs; decoding goes through load_image so errors read like the CLI's."""

    def __init__(self, samples: list[Sample], transform: Callable[[Any], Any]) -> None:
        self.samples = list(samples)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        sample = self.samples[index]
        return self.transform(load_image(sample.path)), sample.label


# --------------------------------------------------------------------------- prompt templates


def _check_template(template: str, origin: str) -> str:
    # Anything but a single bare '{}' would make str.format fail or drop the class name.
    if template.count("{}") != 1 or "{" in template.replace("{}", "") or "}" in template.replace("{}", ""):
        raise RingfoldError(
            f"template {template!r} from {origin} must contain exactly one '{{}}' "
            "(where the class name goes) and no other braces: fix it"
        )
    return template


def load_templates(spec: str | Path | None) -> tuple[str, ...]:
    """Prompt templates from a flag value: None, one template with '{}', or a .txt / .json file of them."""
    if spec is None:
        return DEFAULT_TEMPLATES
    if isinstance(spec, str) and "{}" in spec:
        return (_check_template(spec, "the command line"),)
    path = Path(spec)
    if not path.is_file():
        raise RingfoldError(
            f"template file {path} does not exist: pass a .txt/.json file or a template containing '{{}}'"
        )
    suffix = path.suffix.lower()
    if suffix == ".json":
        data = _read_json(path, "template file")
        if not isinstance(data, list) or not all(isinstance(t, str) for t in data):
            raise RingfoldError(f'{path} must hold a JSON list of template strings, e.g. ["a photo of a {{}}."]')
        templates = [t.strip() for t in data]
    elif suffix == ".txt":
        lines = path.read_text(encoding="utf-8").splitlines()
        templates = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    else:
        raise RingfoldError(f"template file {path} is '{suffix}': use a .txt (one per line) or .json list")
    if not templates:
        raise RingfoldError(f"template file {path} has no templates: add at least one line with '{{}}'")
    return tuple(_check_template(t, str(path)) for t in templates)
