"""``--classes`` and ``--templates`` values for the open-vocabulary commands, checked like any hostile input.

``--classes`` is a comma-separated list ("cat,dog,red fox") or, when the value
names an existing file, that file with one class per line (blank lines and
lines starting with '#' are skipped; use a file for names holding a comma).
``--templates`` is ``bundle`` (the run's templates, the default), one template
holding '{}', or a .txt (one per line) / .json (list) file of templates.
"""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

from ringfold.errors import RingfoldError

from .limits import limits
from .text_manifest import MAX_TEMPLATES, template_problem

#: bytes of a --classes or --templates file
MAX_LIST_FILE_BYTES = 16 * 1024 * 1024
#: the named template set: the templates the bundle's run was trained and exported with
BUNDLE_TEMPLATES = "bundle"


def _read_list_file(path: Path, flag: str) -> str:
    size = path.stat().st_size
    if size > MAX_LIST_FILE_BYTES:
        raise RingfoldError(f"{flag} {path}: {size:,} bytes, over the {MAX_LIST_FILE_BYTES:,}-byte cap; shorten it")
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise RingfoldError(f"{flag} {path}: not UTF-8 text; save it as UTF-8") from None


def parse_classes(value: str) -> list[str]:
    """Class names from a comma list or a file; refuses empty, repeated, unprintable, too long or too many."""
    path = Path(value) if "," not in value and "\0" not in value and len(value) < 4096 else None
    if path is not None and path.is_file():
        names = [ln.strip() for ln in _read_list_file(path, "--classes").splitlines()]
        names = [n for n in names if n and not n.startswith("#")]
        where = f"--classes {path}"
    else:
        names = [n.strip() for n in value.split(",")] if value.strip() else []
        where = "--classes"
        if any(not n for n in names):
            raise RingfoldError(f"{where}: has an empty class name (two commas, or one at an end); remove it")
    caps = limits()
    if not names:
        raise RingfoldError(f"{where}: no class names; pass 'cat,dog,…' or a file with one class per line")
    if len(names) > caps.max_classes:
        raise RingfoldError(
            f"{where}: {len(names):,} classes, over the {caps.max_classes:,} cap; pass fewer "
            f"(or raise {caps.env_name('max_classes')})"
        )
    seen: dict[str, str] = {}
    for name in names:
        if len(name) > caps.max_label_chars or any(unicodedata.category(c) in ("Cc", "Cs") for c in name):
            raise RingfoldError(
                f"{where}: class {name[:40]!r} must be 1..{caps.max_label_chars} printable characters; fix it"
            )
        key = " ".join(name.split()).casefold()  # the tokenizer lower-cases and collapses spaces: same prompt
        if key in seen:
            raise RingfoldError(f"{where}: {seen[key]!r} and {name!r} are the same class to the model; keep one")
        seen[key] = name
    return names


def parse_templates(value: str | None, bundle_templates: tuple[str, ...]) -> tuple[str, ...]:
    """Templates from ``--templates`` (default: the bundle's)."""
    if value is None or value == BUNDLE_TEMPLATES:
        return bundle_templates
    if "{}" in value:
        templates = [value]
        where = "--templates"
    else:
        path = Path(value)
        if not path.is_file():
            raise RingfoldError(
                f"--templates {value[:80]!r}: not a file and holds no '{{}}'; pass 'a photo of a {{}}.', "
                f"a .txt/.json file of templates, or '{BUNDLE_TEMPLATES}'"
            )
        text = _read_list_file(path, "--templates")
        where = f"--templates {path}"
        if path.suffix.lower() == ".json":
            try:
                templates = json.loads(text)
            except ValueError:
                raise RingfoldError(f"{where}: not valid JSON; write a list of strings") from None
            if not isinstance(templates, list) or not all(isinstance(t, str) for t in templates):
                raise RingfoldError(f'{where}: must be a JSON list of strings, e.g. ["a photo of a {{}}."]')
            templates = [t.strip() for t in templates]
        else:
            templates = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not 1 <= len(templates) <= MAX_TEMPLATES:
        raise RingfoldError(f"{where}: needs 1..{MAX_TEMPLATES} templates, has {len(templates)}")
    for template in templates:
        problem = template_problem(template)
        if problem:
            raise RingfoldError(f"{where}: template {problem}; fix it")
    return tuple(templates)
