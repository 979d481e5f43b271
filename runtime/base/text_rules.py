"""Which characters a class name, label or path may hold where ringfold writes it into a file another tool parses.

One rule for every writer (labels.json, DeepStream's label file and nvinfer ini, Triton's labels and
config.pbtxt) and for every reader of a stranger's bundle: a name is data, so it must never hold a
character that changes a file's structure or how a person reads it. Refused everywhere:

- Cc: control characters (NUL, BEL, ESC, newline, tab, …): they end lines, rewrite terminals;
- Cf: format characters (U+202E RIGHT-TO-LEFT OVERRIDE, U+200B ZERO WIDTH SPACE, U+FEFF, …):
  invisible, they make two different names look the same or reorder what is shown;
- Cs: lone surrogates (not text; no UTF-8 encoding);
- Zl, Zp: U+2028 LINE SEPARATOR, U+2029 PARAGRAPH SEPARATOR: line breaks to many parsers and editors.

Formats with their own syntax characters add theirs at the writer (';' in DeepStream's label file,
a backslash in a GLib key-file value); this module holds only the rule they all share.
"""

from __future__ import annotations

import unicodedata

from ringfold.errors import RingfoldError

#: Unicode categories no name or path written into a structured file may hold (see the module docstring)
FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_KIND = {
    "Cc": "a control character",
    "Cf": "an invisible format character",
    "Cs": "a lone surrogate",
    "Zl": "a line separator",
    "Zp": "a paragraph separator",
}


def describe_char(ch: str) -> str:
    """``U+202E (RIGHT-TO-LEFT OVERRIDE)``: how an error names a character a terminal may not show."""
    name = unicodedata.name(ch, "")
    return f"U+{ord(ch):04X}" + (f" ({name})" if name else "")


def forbidden_char(text: str) -> str | None:
    """The first character of ``text`` in :data:`FORBIDDEN_CATEGORIES`, described; None when there is none."""
    for ch in text:
        category = unicodedata.category(ch)
        if category in FORBIDDEN_CATEGORIES:
            return f"{describe_char(ch)}, {_KIND[category]}"
    return None


def check_text(text: str, what: str, fix: str, error: type[RingfoldError] = RingfoldError) -> str:
    """``text`` when it holds no forbidden character; else one line naming ``what``, the code point and ``fix``."""
    bad = forbidden_char(text)
    if bad:
        raise error(f"{what} {text[:40]!r} holds {bad}; {fix}")
    return text


def check_path(path: object, what: str) -> str:
    """A path as text, refused when it holds a forbidden character (a newline in a folder name would add
    lines to any config that names the path)."""
    return check_text(str(path), what, "rename or move the folder to a name without it")
