"""open_clip's text cleaning (``basic_clean`` + ``whitespace_clean`` + lower-case), without torch or regex.

open_clip cleans every prompt with ``ftfy.fix_text``, then ``html.unescape`` twice,
collapses whitespace and lower-cases. ftfy is a pure-Python package, but a Jetson
image rarely has it, so :func:`clean_text` uses it when it is importable and
otherwise :func:`fix_text_without_ftfy`, which applies the same deterministic
fixes ftfy's default configuration applies, in ftfy's order, until the text is
stable: HTML entities, C1 controls read as Windows-1252, Latin ligatures,
half/full-width forms, curly quotes, line breaks, surrogates, terminal escapes,
control characters, NFC.

Where the fallback may differ from ftfy (tests measure it): ftfy also repairs
mojibake (UTF-8 text decoded as Latin-1/Windows-1252, "sÃ³" → "só") with
heuristics that are not reproduced here, and decodes all-caps HTML entities
("&EACUTE;"). Class names and prompt templates typed by a person contain
neither; text scraped from a mis-decoded web page may.
"""

from __future__ import annotations

import functools
import html
import html.entities
import re
import unicodedata

#: ftfy's default: decode HTML entities only when the text has no '<' (it may be HTML source)
_ENTITY = re.compile(r"&#?[0-9A-Za-z]{1,24};")
_C1_CONTROL = re.compile(r"[\x80-\x9f]")
_SINGLE_QUOTES = re.compile("[\u02bc\u2018-\u201b]")
_DOUBLE_QUOTES = re.compile("[\u201c-\u201f]")
_TERMINAL_ESCAPE = re.compile("\033\\[((?:\\d|;)*)([a-zA-Z])")
_SURROGATE_PAIR = re.compile("[\ud800-\udbff][\udc00-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_LINE_BREAKS = re.compile("\r\n|\r|\u2028|\u2029|\u0085")

#: single-character Latin ligatures and legacy digraphs, split (not æ/œ: those are letters people mean)
_LIGATURES = {
    ord(k): v
    for k, v in {
        "Ĳ": "IJ",
        "ĳ": "ij",
        "ŉ": "ʼn",
        "Ǳ": "DZ",
        "ǲ": "Dz",
        "ǳ": "dz",
        "Ǆ": "DŽ",
        "ǅ": "Dž",
        "ǆ": "dž",
        "Ǉ": "LJ",
        "ǈ": "Lj",
        "ǉ": "lj",
        "Ǌ": "NJ",
        "ǋ": "Nj",
        "ǌ": "nj",
        "ﬀ": "ff",
        "ﬁ": "fi",
        "ﬂ": "fl",
        "ﬃ": "ffi",
        "ﬄ": "ffl",
        "ﬅ": "ſt",
        "ﬆ": "st",
    }.items()
}

_CONTROL_CHARS = dict.fromkeys(
    [*range(0x00, 0x09), 0x0B, *range(0x0E, 0x20), 0x7F, *range(0x206A, 0x2070), 0xFEFF, *range(0xFFF9, 0xFFFD)]
)


def _width_map() -> dict[int, str]:
    """Half- and full-width forms → their ordinary characters (and the ideographic space → a space)."""
    table = {0x3000: " "}
    for code in range(0xFF01, 0xFFF0):
        normal = unicodedata.normalize("NFKC", chr(code))
        if normal != chr(code):
            table[code] = normal
    return table


_WIDTH = _width_map()


def _entity(match: re.Match[str]) -> str:
    """A named entity with its semicolon, or a numeric reference that decodes whole; else left as it is."""
    text = match.group(0)
    if text.startswith("&#"):
        decoded = html.unescape(text)
        return text if ";" in decoded else decoded
    return html.entities.html5.get(text[1:], text)


def _c1_as_windows_1252(match: re.Match[str]) -> str:
    byte = match.group(0).encode("latin-1")
    try:
        return byte.decode("windows-1252")
    except UnicodeDecodeError:  # 0x81 0x8D 0x8F 0x90 0x9D: undefined in Windows-1252, kept as they are
        return match.group(0)


def _surrogate_pair(match: re.Match[str]) -> str:
    high, low = (ord(c) for c in match.group(0))
    return chr(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))


def fix_text_without_ftfy(text: str) -> str:
    """ftfy's deterministic default fixes (no mojibake repair), line by line like ftfy.

    As in ftfy, entities stop being decoded from the first line that holds a '<' on."""
    out, unescape = [], True
    parts = text.split("\n")  # ftfy segments at "\n" only, keeping it
    for line in [p + "\n" for p in parts[:-1]] + parts[-1:]:
        unescape = unescape and "<" not in line
        out.append(_fix_segment(line, unescape))
    return "".join(out)


def _fix_segment(text: str, unescape: bool) -> str:
    while True:
        before = text
        if unescape:
            text = _ENTITY.sub(_entity, text)
        text = _C1_CONTROL.sub(_c1_as_windows_1252, text)
        text = text.translate(_LIGATURES).translate(_WIDTH)
        text = _SINGLE_QUOTES.sub("'", _DOUBLE_QUOTES.sub('"', text))
        text = _LINE_BREAKS.sub("\n", text)
        if _SURROGATE.search(text):
            text = _SURROGATE.sub("\ufffd", _SURROGATE_PAIR.sub(_surrogate_pair, text))
        text = _TERMINAL_ESCAPE.sub("", text).translate(_CONTROL_CHARS)
        text = unicodedata.normalize("NFC", text)
        if text == before:
            return text


@functools.lru_cache(maxsize=1)
def _ftfy_fix_text():
    try:
        import ftfy
    except ImportError:
        return None
    return ftfy.fix_text


def clean_text(text: str, use_ftfy: bool | None = None) -> str:
    """open_clip's 'lower' cleaning: fix text, unescape HTML twice, collapse whitespace, lower-case.

    ``use_ftfy=None`` uses ftfy when it is installed (exactly open_clip's result), else the fallback.
    """
    fix = _ftfy_fix_text() if use_ftfy is not False else None
    if use_ftfy and fix is None:
        raise ImportError("ftfy is not installed")
    text = (fix or fix_text_without_ftfy)(text)
    text = html.unescape(html.unescape(text)).strip()
    return " ".join(text.split()).strip().lower()


def ftfy_available() -> bool:
    return _ftfy_fix_text() is not None
