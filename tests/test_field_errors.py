"""Library errors speak of fields; the CLI shows the flag that sets the field (issue 11)."""

from __future__ import annotations

import json

import pytest

from ringfold.cli import main
from ringfold.errors import FieldError
from ringfold.exporter.precision import calibration_images
from tests.helpers import one_line_error


def test_empty_calibration_folder_names_the_calib_field(tmp_path):
    (tmp_path / "calib").mkdir()
    with pytest.raises(FieldError) as err:
        calibration_images(tmp_path / "calib")
    assert err.value.field == "calib" and "has no images for int8 calibration" in err.value.problem


def test_resume_without_a_run_names_the_flag(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path / "nothing")]) == 2
    one_line_error(capsys, "ringfold train: error: --resume: ", "has no train_config.json")


def test_image_root_that_does_not_exist_names_the_field(tmp_path):
    from ringfold.trainer.data_sources import from_coop_split

    split = tmp_path / "split.json"
    entries = [["a.png", 0, "cat"], ["b.png", 1, "dog"]]
    split.write_text(json.dumps({"train": entries, "val": entries, "test": entries}))
    with pytest.raises(FieldError) as err:
        from_coop_split(split, tmp_path / "no-images")
    assert err.value.field == "image_root" and "does not exist; point it at the image folder" in err.value.problem
