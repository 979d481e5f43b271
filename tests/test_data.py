"""Labelled data loading: loaders, splits, k-shot sampling, image checks, templates, demo set."""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from pathlib import Path

import pytest
import torch
from PIL import Image

from ringfold.demo_data import make_demo_dataset
from ringfold.errors import RingfoldError
from ringfold.trainer.data import (
    DEFAULT_TEMPLATES,
    ImageDataset,
    LabelledSplits,
    Sample,
    load_templates,
    sample_k_shot,
    scan_images,
    subsample_classes,
)
from ringfold.trainer.data_sources import from_coop_split, from_csv, from_image_folder, load_splits


def _png(path: Path, colour: tuple[int, int, int] = (200, 30, 30), size: int = 8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), colour).save(path)
    return path


def _tree(root: Path, counts: dict[str, int]) -> None:
    for folder, n in counts.items():
        for i in range(n):
            _png(root / folder / f"{i:02d}.png", colour=(i * 10 % 256, 100, 50))


def _labels(samples: list[Sample]) -> Counter:
    return Counter(s.label for s in samples)


# --------------------------------------------------------------------------- image folders


def test_image_folder_flat_random_split_is_stratified_and_reproducible(tmp_path: Path) -> None:
    _tree(tmp_path, {"golden_retriever": 10, "cat": 10, "zebra": 5})
    (tmp_path / "README.txt").write_text("not an image")
    (tmp_path / "cat" / "notes.txt").write_text("not an image either")
    splits = from_image_folder(tmp_path, val_fraction=0.1, test_fraction=0.2, seed=3)

    assert splits.classnames == ["cat", "golden retriever", "zebra"]
    assert _labels(splits.test) == {0: 2, 1: 2, 2: 1}
    assert _labels(splits.val) == {0: 1, 1: 1, 2: 1}
    assert _labels(splits.train) == {0: 7, 1: 7, 2: 3}
    every = splits.train + splits.val + splits.test
    assert len({s.path for s in every}) == 25  # disjoint and complete
    assert all(s.path.suffix == ".png" for s in every)
    assert all(s.path.parent.name == ["cat", "golden_retriever", "zebra"][s.label] for s in every)

    again = from_image_folder(tmp_path, val_fraction=0.1, test_fraction=0.2, seed=3)
    assert again.test == splits.test and again.train == splits.train
    other_seed = from_image_folder(tmp_path, val_fraction=0.1, test_fraction=0.2, seed=4)
    assert other_seed.test != splits.test


def test_image_folder_uses_given_train_test_folders(tmp_path: Path) -> None:
    _tree(tmp_path / "train", {"dog": 4, "cat": 3})
    _tree(tmp_path / "test", {"dog": 2, "cat": 1})
    splits = from_image_folder(tmp_path)

    assert splits.classnames == ["cat", "dog"]
    assert _labels(splits.train) == {0: 3, 1: 4}
    assert _labels(splits.test) == {0: 1, 1: 2}
    assert splits.val == []
    assert all(s.path.parts[-3] == "train" for s in splits.train)
    assert all(s.path.parts[-3] == "test" for s in splits.test)


def test_image_folder_test_class_missing_from_train_is_an_error(tmp_path: Path) -> None:
    _tree(tmp_path / "train", {"dog": 2, "cat": 2})
    _tree(tmp_path / "val", {"dog": 1, "cow": 1})
    with pytest.raises(RingfoldError, match="cow"):
        from_image_folder(tmp_path)


def test_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(RingfoldError, match="does not exist"):
        from_image_folder(tmp_path / "nope")

    one = tmp_path / "one"
    _tree(one, {"dog": 3})
    with pytest.raises(RingfoldError, match="one class.*at least two"):
        from_image_folder(one)

    empty = tmp_path / "empty"
    _tree(empty, {"dog": 3, "cat": 3})
    (empty / "horse").mkdir()
    (empty / "horse" / "readme.md").write_text("no images here")
    with pytest.raises(RingfoldError) as err:
        from_image_folder(empty)
    assert "empty class 'horse'" in str(err.value)
    assert str(empty) in str(err.value)
    assert "\n" not in str(err.value)

    two = tmp_path / "two"
    _tree(two, {"dog": 3, "cat": 3})
    with pytest.raises(RingfoldError, match="val_fraction \\+ test_fraction"):
        from_image_folder(two, val_fraction=0.5, test_fraction=0.5)


# --------------------------------------------------------------------------- CSV


def test_csv_with_split_column(tmp_path: Path) -> None:
    for name in ("a.png", "b.png", "c.png", "d.png", "e.png"):
        _png(tmp_path / "img" / name)
    csv_path = tmp_path / "data.csv"
    csv_path.write_text(
        "path,label,split\n"
        "img/a.png,zebra,train\n"
        "img/b.png,ant,train\n"
        "img/c.png,zebra,val\n"
        "img/d.png,ant,test\n"
        "img/e.png,zebra,TEST\n"
    )
    splits = from_csv(csv_path)
    assert splits.classnames == ["ant", "zebra"]
    assert [(s.path.name, s.label) for s in splits.train] == [("b.png", 0), ("a.png", 1)]
    assert [(s.path.name, s.label) for s in splits.val] == [("c.png", 1)]
    assert [(s.path.name, s.label) for s in splits.test] == [("d.png", 0), ("e.png", 1)]
    assert splits.train[0].path == tmp_path / "img" / "b.png"
    assert load_splits(csv_path) == splits


def test_csv_without_split_column_is_split_at_random(tmp_path: Path) -> None:
    rows = ["path,label"]
    for i in range(10):
        _png(tmp_path / f"{i}.png")
        rows.append(f"{i}.png,{'odd' if i % 2 else 'even'}")
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    splits = from_csv(tmp_path / "d.csv", test_fraction=0.4)
    assert splits.classnames == ["even", "odd"]
    assert _labels(splits.test) == {0: 2, 1: 2}
    assert _labels(splits.train) == {0: 3, 1: 3}


def test_csv_errors(tmp_path: Path) -> None:
    _png(tmp_path / "a.png")
    bad_header = tmp_path / "h.csv"
    bad_header.write_text("file,class\na.png,x\n")
    with pytest.raises(RingfoldError, match="path,label"):
        from_csv(bad_header)

    bad_split = tmp_path / "s.csv"
    bad_split.write_text("path,label,split\na.png,x,train\na.png,y,holdout\n")
    with pytest.raises(RingfoldError, match="line 3.*holdout"):
        from_csv(bad_split)

    missing = tmp_path / "m.csv"
    missing.write_text("path,label\na.png,x\ngone.png,y\n")
    with pytest.raises(RingfoldError, match="1 of 2 images.*gone.png"):
        from_csv(missing)


# --------------------------------------------------------------------------- CoOp split files


def _coop(tmp_path: Path) -> tuple[Path, dict]:
    split = {
        "train": [
            ["face/0.jpg", 0, "face"],
            ["face/1.jpg", 0, "face"],
            ["leopard/0.jpg", 1, "leopard"],
            ["sea_horse/0.jpg", 2, "sea_horse"],
        ],
        "val": [["leopard/1.jpg", 1, "leopard"]],
        "test": [["sea_horse/1.jpg", 2, "sea_horse"], ["face/2.jpg", 0, "face"]],
    }
    for name in ("train", "val", "test"):
        for rel, _, _ in split[name]:
            _png(tmp_path / "images" / rel)
    path = tmp_path / "split_zhou_Toy.json"
    path.write_text(json.dumps(split))
    return path, split


def test_coop_split_round_trip(tmp_path: Path) -> None:
    path, split = _coop(tmp_path)
    splits = from_coop_split(path, tmp_path / "images")
    assert splits.classnames == ["face", "leopard", "sea horse"]
    for name in ("train", "val", "test"):
        got = sorted((str(s.path.relative_to(tmp_path / "images")), s.label) for s in getattr(splits, name))
        assert got == sorted((rel, label) for rel, label, _ in split[name])
    # load_splits finds the images/ folder next to the JSON on its own.
    assert load_splits(path) == splits


def test_coop_split_inconsistent_label_is_an_error(tmp_path: Path) -> None:
    path, split = _coop(tmp_path)
    split["test"][1] = ["face/2.jpg", 0, "leopard"]
    path.write_text(json.dumps(split))
    with pytest.raises(RingfoldError) as err:
        from_coop_split(path, tmp_path / "images")
    message = str(err.value)
    assert "label 0" in message and "face" in message and "leopard" in message and path.name in message


def test_coop_split_missing_files_are_counted_and_named(tmp_path: Path) -> None:
    path, _ = _coop(tmp_path)
    (tmp_path / "images" / "leopard" / "1.jpg").unlink()
    (tmp_path / "images" / "face" / "2.jpg").unlink()
    with pytest.raises(RingfoldError) as err:
        from_coop_split(path, tmp_path / "images")
    message = str(err.value)
    assert "2 of 7 images" in message
    assert "leopard/1.jpg" in message and "face/2.jpg" in message
    assert "\n" not in message


def test_load_splits_dispatch_errors(tmp_path: Path) -> None:
    with pytest.raises(RingfoldError, match="does not exist"):
        load_splits(tmp_path / "missing.csv")
    (tmp_path / "data.parquet").write_bytes(b"x")
    with pytest.raises(RingfoldError, match="'.parquet'"):
        load_splits(tmp_path / "data.parquet")
    _tree(tmp_path / "folder", {"a": 2, "b": 2})
    assert load_splits(tmp_path / "folder").classnames == ["a", "b"]


# --------------------------------------------------------------------------- sampling


def _fake_samples(counts: dict[int, int]) -> list[Sample]:
    return [Sample(Path(f"/data/{label}/{i:03d}.png"), label) for label, n in counts.items() for i in range(n)]


def test_k_shot_counts_and_warning(caplog: pytest.LogCaptureFixture) -> None:
    samples = _fake_samples({0: 20, 1: 20, 2: 3})
    with caplog.at_level(logging.WARNING):
        picked = sample_k_shot(samples, k=4, seed=0)
    assert _labels(picked) == {0: 4, 1: 4, 2: 3}
    assert len(set(picked)) == len(picked)
    assert set(picked) <= set(samples)
    assert "fewer than k=4" in caplog.text and "label 2 (3)" in caplog.text

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        sample_k_shot(samples, k=3, seed=0)
    assert caplog.text == ""


def test_k_shot_is_deterministic_order_independent_and_nested() -> None:
    samples = _fake_samples({0: 30, 1: 30})
    a = sample_k_shot(samples, k=5, seed=7)
    assert sample_k_shot(list(reversed(samples)), k=5, seed=7) == a
    assert sample_k_shot(samples[::2] + samples[1::2], k=5, seed=7) == a
    assert sample_k_shot(samples, k=5, seed=8) != a
    assert set(sample_k_shot(samples, k=2, seed=7)) <= set(a)
    with pytest.raises(RingfoldError):
        sample_k_shot(samples, k=0, seed=0)


def test_base_new_subsampling() -> None:
    names = ["a", "b", "c", "d", "e"]
    splits = LabelledSplits(names, _fake_samples({i: 2 for i in range(5)}), [], _fake_samples({4: 1, 0: 1}), "toy")

    base = subsample_classes(splits, "base")
    assert base.classnames == ["a", "b", "c"]
    assert _labels(base.train) == {0: 2, 1: 2, 2: 2}
    assert [s.path.parent.name for s in base.train] == ["0", "0", "1", "1", "2", "2"]
    assert [s.label for s in base.test] == [0]

    new = subsample_classes(splits, "new")
    assert new.classnames == ["d", "e"]
    assert _labels(new.train) == {0: 2, 1: 2}
    assert {s.path.parent.name: s.label for s in new.train} == {"3": 0, "4": 1}
    assert [(s.path.parent.name, s.label) for s in new.test] == [("4", 1)]

    assert subsample_classes(splits, "all") == splits
    with pytest.raises(RingfoldError):
        subsample_classes(splits, "novel")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- image checks


def _with_bad_files(tmp_path: Path) -> tuple[list[Sample], Path, Path]:
    good = [Sample(_png(tmp_path / f"good{i}.png"), i % 2) for i in range(3)]
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    # The corrupt file is listed twice: it must still be decoded and reported once.
    samples = [good[0], Sample(corrupt, 0), good[1], Sample(empty, 1), good[2], Sample(corrupt, 0)]
    return samples, corrupt, empty


def test_scan_images_skip_reports_each_bad_file_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    samples, corrupt, empty = _with_bad_files(tmp_path)
    with caplog.at_level(logging.WARNING):
        kept = scan_images(samples, on_bad="skip")
    assert kept == [samples[0], samples[2], samples[4]]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum(str(corrupt) in w for w in warnings) == 1
    assert sum(str(empty) in w for w in warnings) == 1
    assert any("2 of 5" in w for w in warnings)  # summary count over distinct files


def test_scan_images_fail_names_the_file(tmp_path: Path) -> None:
    samples, corrupt, _ = _with_bad_files(tmp_path)
    with pytest.raises(RingfoldError) as err:
        scan_images(samples, on_bad="fail")
    message = str(err.value)
    assert str(corrupt) in message and "2 of 5" in message and "--on-bad-image skip" in message
    assert "\n" not in message
    good = [s for s in samples if s.path.name.startswith("good")]
    assert scan_images(good, on_bad="fail") == good


def test_image_dataset_applies_transform(tmp_path: Path) -> None:
    samples = [Sample(_png(tmp_path / "x.png", colour=(255, 0, 0), size=4), 1)]
    dataset = ImageDataset(samples, lambda img: torch.tensor(list(img.getpixel((0, 0))), dtype=torch.float32))
    assert len(dataset) == 1
    tensor, label = dataset[0]
    assert label == 1 and tensor.tolist() == [255.0, 0.0, 0.0]


# --------------------------------------------------------------------------- templates


def test_load_templates(tmp_path: Path) -> None:
    assert load_templates(None) == DEFAULT_TEMPLATES == ("a photo of a {}.",)
    assert load_templates("a sketch of a {}") == ("a sketch of a {}",)

    txt = tmp_path / "t.txt"
    txt.write_text("# my prompts\na photo of a {}.\n\n  a blurry photo of the {}.  \n")
    assert load_templates(txt) == ("a photo of a {}.", "a blurry photo of the {}.")
    js = tmp_path / "t.json"
    js.write_text(json.dumps(["itap of a {}.", "art of the {}."]))
    assert load_templates(str(js)) == ("itap of a {}.", "art of the {}.")

    for bad in ("a {} and a {}", "a {0} photo of {}"):
        with pytest.raises(RingfoldError, match="exactly one"):
            load_templates(bad)
    txt.write_text("a photo of a {}.\na photo without a slot\n")
    with pytest.raises(RingfoldError, match="without a slot"):
        load_templates(txt)
    js.write_text(json.dumps({"not": "a list"}))
    with pytest.raises(RingfoldError, match="JSON list"):
        load_templates(js)
    with pytest.raises(RingfoldError, match="does not exist"):
        load_templates("no_template_here")


# --------------------------------------------------------------------------- demo set


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.png"))}


def test_demo_dataset_is_deterministic_and_loads(tmp_path: Path) -> None:
    names = make_demo_dataset(tmp_path / "a", per_class=5, size=32, seed=1)
    make_demo_dataset(tmp_path / "b", per_class=5, size=32, seed=1)
    make_demo_dataset(tmp_path / "c", per_class=5, size=32, seed=2)
    assert names == ["blue checkerboard", "green stripes", "red circle", "yellow triangle"]

    a = _digest(tmp_path / "a")
    assert len(a) == 4 * 5 + 4 * 2
    assert a == _digest(tmp_path / "b")
    assert set(a.values()).isdisjoint(_digest(tmp_path / "c").values())
    assert len(set(a.values())) == len(a)  # no two images alike

    splits = load_splits(tmp_path / "a")
    assert splits.classnames == names
    assert _labels(splits.train) == {i: 5 for i in range(4)}
    assert _labels(splits.test) == {i: 2 for i in range(4)}
    with Image.open(splits.test[0].path) as img:
        assert img.size == (32, 32) and img.mode == "RGB"


@pytest.mark.parametrize(
    "folders, needle",
    [(["Cat", "cat"], "'Cat' and 'cat' are the same class"), (["cat", "do\u200bg"], "U+200B (ZERO WIDTH SPACE)")],
)
def test_class_names_from_folders_follow_the_runtime_rule(tmp_path: Path, folders: list[str], needle: str) -> None:
    """A class name a bundle's labels.json would refuse (or that ties another) is refused before training."""
    _tree(tmp_path, {name: 3 for name in folders})
    with pytest.raises(RingfoldError, match=needle.replace("(", r"\(").replace(")", r"\)").replace("+", r"\+")):
        from_image_folder(tmp_path)
