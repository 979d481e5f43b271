"""The manifest's optional ``deepstream`` section: the files of the bundle's ``deepstream/`` folder.

The folder (nvinfer configs, labels, the INT8 calibration cache, a deepstream-app pipeline) is
written by :mod:`ringfold.runtime.deploy.deepstream`; the manifest only lists its files, each
hashed like every other member, so this parser checks that list and nothing of DeepStream.
"""

from __future__ import annotations

from collections.abc import Sequence

from ringfold.runtime.base.fields import Fields

from ..spec import SectionContext

SECTION = "deepstream"
#: the folder inside the bundle
FOLDER = "deepstream"
#: the INT8 calibration cache the folder carries when the export calibrated one
CALIBRATION = "calibration_int8.cache"


def deepstream_section(files: Sequence[str], calibration_note: str | None) -> dict:
    """The manifest's ``deepstream`` section: the folder's files (hashed like every other file)."""
    section: dict = {"dir": FOLDER, "files": [f"{FOLDER}/{name}" for name in sorted(files)]}
    if calibration_note:
        section["calibration"] = {"file": f"{FOLDER}/{CALIBRATION}", "method": calibration_note, "validated": False}
    return section


def parse_deepstream_section(f: Fields, ctx: SectionContext) -> tuple[str, ...]:
    """The folder's files, each a hashed member under ``deepstream/``."""
    f.string("dir", choices=(FOLDER,))
    raw = f.raw("files")
    if not isinstance(raw, list) or not 1 <= len(raw) <= 64:
        raise f.fail("must be a list of 1..64 files", "files")
    holder = Fields({"files": {str(i): v for i, v in enumerate(raw)}}, f.file, f.fix, f.where, f.error)
    out = []
    for i in range(len(raw)):
        rel = ctx.member(holder.section("files"), str(i))
        if not rel.startswith(FOLDER + "/"):
            raise f.fail(f"{rel!r} is not under {FOLDER}/", "files")
        out.append(rel)
    return tuple(out)
