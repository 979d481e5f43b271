"""Labelled few-shot image data: samples and splits, k-shot sampling, base/new class splits, image checks, templates.

The loaders that read ``--data`` (image folders, CSV, CoOp split files) are in ``data_sources.py``.
Every check raises :class:`RingfoldError` with one line naming the file and the fix, so bad data
fails in the first second rather than mid-epoch.
"""

from __future__ import annotations

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

from ringfold.errors import ImageError, RingfoldError
from ringfold.runtime.pixels.images import load_image

log = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "val", "test")
DEFAULT_TEMPLATES: tuple[str, ...] = ("a photo of a {}.",)
_PROGRESS_THRESHOLD = 200  # below this a progress bar is more noise than help


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


def sorted_samples(samples: Iterable[Sample]) -> list[Sample]:
    # A canonical order makes every downstream random choice independent of filesystem/CSV order.
    return sorted(samples, key=lambda s: (s.label, str(s.path)))


# --------------------------------------------------------------------------- sampling


def sample_k_shot(samples: list[Sample], k: int, seed: int) -> list[Sample]:
    """Draw up to ``k`` samples per class.

    Each class is shuffled by its own RNG seeded from (seed, label) and the first ``k`` kept, so the
    draw does not depend on input order or on other classes, and the 1-shot set is inside the 2-shot set.
    """
    if k < 1:
        raise RingfoldError(f"k={k} shots per class: use k >= 1")
    by_label: dict[int, list[Sample]] = defaultdict(list)
    for s in sorted_samples(set(samples)):
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
    return sorted_samples(chosen)


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


def read_data_json(path: Path, what: str) -> Any:
    """A JSON file the user gave (a split file, a template list): a one-line RingfoldError when unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RingfoldError(f"{what} {path} does not exist: check the path") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RingfoldError(f"{path} is not valid JSON ({e}): fix or regenerate the {what}") from None


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
        data = read_data_json(path, "template file")
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
