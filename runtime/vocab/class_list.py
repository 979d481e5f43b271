"""``--classes`` and ``--templates`` values for the open-vocabulary commands, checked like any hostile input.

``--classes`` is a comma-separated list ("cat,dog,red fox") or, when the value
names an existing file, that file with one class per line (blank lines and
lines starting with '#' are skipped: comments; use a file for names holding a
comma). A value shaped like a path (holding '/' or '\\', starting with '.' or
'~', ending in .txt/.csv/.json/.lst) that names no file is an error, never a
class. Class names are data: the checks here refuse what would tie, what the
tokenizer reads as nothing, and characters that change a file's structure
(:mod:`.text_rules`).
``--templates`` is ``bundle`` (the run's templates, the default), one template
holding '{}', or a .txt (one per line) / .json (list) file of templates.
"""

from __future__ import annotations

import json
import os
import unicodedata
from collections.abc import Sequence
from pathlib import Path

from ringfold.errors import RingfoldError
from ringfold.runtime.base.limits import limits
from ringfold.runtime.base.text_rules import check_text
from ringfold.runtime.bundle.loader import Bundle
from ringfold.runtime.bundle.sections.text import MAX_TEMPLATES, fill, template_problem

from .tokenizer import ClipTokenizer

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


#: a --classes value ending like this names a file (never a class called "classes.txt")
LIST_FILE_SUFFIXES = (".txt", ".csv", ".json", ".lst")
#: what every --classes help and error says about a class file
CLASS_FILE_RULES = "one class per line; blank lines and lines starting with '#' (comments) are skipped"


def looks_like_path(value: str) -> bool:
    """Whether a ``--classes`` value names a file by its shape: a mistyped path must be an error, never a class.

    A comma list stays a list ("T-shirt/top,trouser") unless the whole value starts or ends like a path."""
    text = value.strip()
    starts = text.startswith((".", "~", "/")) or text.lower().endswith(LIST_FILE_SUFFIXES)
    return starts or ("," not in text and ("/" in text or "\\" in text))


def _class_file(value: str) -> Path | None:
    """The file a ``--classes`` value names; None for a comma list; refused when it looks like a missing path."""
    if "\0" in value or len(value) >= 4096 or ("," in value and not looks_like_path(value)):
        return None
    path = Path(os.path.expanduser(value))  # a quoted '~/classes.txt' reaches us unexpanded
    if os.path.isfile(path):  # os.path: False (never an exception) for a name too long or unreadable
        return path
    if not looks_like_path(value):
        return None
    why = "is not a regular file" if os.path.exists(path) else "no such file"
    raise RingfoldError(
        f"--classes {value[:80]!r}: {why} (the value looks like a path); fix the path, or pass the class names "
        "as 'cat,dog,…'"
    )


def _trim(text: str) -> str:
    """``text`` without the spaces, tabs and line ends around it; a line or paragraph separator, a control or
    format character stays, so :func:`check_class_names` refuses it instead of hiding it (str.strip drops
    U+2028 and U+0085 at the ends silently)."""
    start, end = 0, len(text)
    while start < end and _is_plain_space(text[start]):
        start += 1
    while end > start and _is_plain_space(text[end - 1]):
        end -= 1
    return text[start:end]


def _is_plain_space(ch: str) -> bool:
    return ch in " \t\r\n" or unicodedata.category(ch) == "Zs"


def parse_classes(value: str) -> list[str]:
    """Class names from a comma list or a file (:data:`CLASS_FILE_RULES`), checked by :func:`check_class_names`."""
    path = _class_file(value)
    if path is not None:
        # "\n" only: splitlines() would also split at U+2028, U+0085, … and turn one hostile name into two
        names = [_trim(ln) for ln in _read_list_file(path, "--classes").split("\n")]
        names = [n for n in names if n and not n.startswith("#")]
        where = f"--classes {path}"
    else:
        names = [_trim(n) for n in value.split(",")] if _trim(value.replace(",", " ")) else []
        where = "--classes"
        if any(not n for n in names):
            raise RingfoldError(f"{where}: has an empty class name (two commas, or one at an end); remove it")
    return check_class_names(names, where)


def check_class_names(names: Sequence[str], where: str = "--classes") -> list[str]:
    """``names`` when they can be a classifier's head: 2..max_classes names, each 1..max_label_chars characters
    with no control, format or separator character (:mod:`.text_rules`), no two equal once case and spaces are
    folded. :func:`check_prompts_distinct` then compares what the text tower really sees."""
    caps = limits()
    names = list(names)
    if not names:
        raise RingfoldError(f"{where}: no class names; pass 'cat,dog,…' or a file with {CLASS_FILE_RULES}")
    if len(names) == 1:
        raise RingfoldError(
            f"{where}: one class ({names[0][:40]!r}) cannot be classified (a head needs at least two); add another"
        )
    if len(names) > caps.max_classes:
        raise RingfoldError(
            f"{where}: {len(names):,} classes, over the {caps.max_classes:,} cap; pass fewer "
            f"(or raise {caps.env_name('max_classes')})"
        )
    seen: dict[str, str] = {}
    for name in names:
        if not isinstance(name, str) or not 0 < len(name) <= caps.max_label_chars:
            raise RingfoldError(
                f"{where}: class {str(name)[:40]!r} must be 1..{caps.max_label_chars} printable characters; fix it"
            )
        check_text(name, f"{where}: class", "remove the character")
        key = " ".join(name.split()).casefold()  # the tokenizer lower-cases and collapses spaces: same prompt
        if key in seen:
            raise RingfoldError(f"{where}: {seen[key]!r} and {name!r} are the same class to the model; keep one")
        seen[key] = name
    return names


def check_prompts_distinct(
    names: Sequence[str], tokenizer: ClipTokenizer, templates: Sequence[str], where: str = "--classes"
) -> None:
    """Refuse a name the tokenizer reads as nothing, and two names whose prompts are the same token ids.

    The text tower sees ids, not strings: after the tokenizer's HTML unescaping, text fixes, whitespace
    clean-up, lower-casing and the cut at its context length, "R&amp;D" is "r&d" and two long names equal
    in their first tokens are one name. Same ids for every template means the same embedding: a tie."""
    templates = tuple(templates) or ("{}",)
    seen: dict[bytes, str] = {}
    for name in names:
        if not tokenizer.encode(name):
            raise RingfoldError(
                f"{where}: class {name[:40]!r} is empty to the tokenizer (only spaces or entities it drops); fix it"
            )
        key = tokenizer([fill(t, name) for t in templates]).tobytes()
        if key in seen:
            raise RingfoldError(
                f"{where}: {seen[key]!r} and {name[:80]!r} are the same prompt to the text tower (after its HTML "
                f"unescaping, lower-casing, whitespace clean-up and cut at {tokenizer.context_length} tokens): "
                "they would always tie; keep one or make them differ earlier"
            )
        seen[key] = name


def check_against_bundle(bundle: Bundle, names: Sequence[str], templates: Sequence[str] | None, where: str) -> None:
    """Every class-list check that needs the bundle (its tokenizer and templates), before any model is loaded.

    A bundle without a text tower is left to :func:`~.text_model.open_text_tower`, which refuses it with the fix."""
    check_class_names(names, where)
    info = bundle.manifest.text
    if info is None:
        return
    tokenizer = ClipTokenizer.from_file(bundle.file(info.vocabulary), info.context_length)
    check_prompts_distinct(names, tokenizer, templates or info.templates, where)


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
