"""open_clip's CLIP tokenizer (``SimpleTokenizer``) in plain Python + numpy, for the device.

Byte-level BPE over open_clip's vocabulary file (``bpe_simple_vocab_16e6.txt.gz``,
shipped in the bundle and hashed), after open_clip's 'lower' cleaning
(:mod:`ringfold.runtime.vocab.text_clean`). Ids: 256 byte symbols, the same 256 with
the end-of-word mark, 48,894 merges, then ``<start_of_text>`` and
``<end_of_text>`` (49,408 in all). Each text becomes ``[SOT] + tokens + [EOT]``;
a longer one than ``context_length`` is cut to it and its last id set to EOT
(open_clip 3.x's rule, so the text tower's argmax still finds the EOT), and the
row is zero-padded.

open_clip splits words with the third-party ``regex`` module (``\\p{L}``,
``\\p{N}``, case-insensitive). :func:`pre_tokenize` reproduces that pattern by
Unicode category with the standard library; the categories come from Python's
``unicodedata``, so a character assigned in a newer Unicode version than
Python's may be split differently from ``regex`` (tests exclude unassigned
characters and say so).
"""

from __future__ import annotations

import gzip
import unicodedata
from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from ringfold.errors import BundleError, RingfoldError

from .text_clean import clean_text

SOT, EOT = "<start_of_text>", "<end_of_text>"
#: merges open_clip reads from the file (lines 1..48,894 after the header)
NUM_MERGES = 49152 - 256 - 2
VOCAB_SIZE = 2 * 256 + NUM_MERGES + 2
#: the gzip file and its text, in bytes (the real ones: 1.36 MB and 1.6 MB); guards a gzip bomb
MAX_VOCAB_GZ_BYTES = 8 * 1024 * 1024
MAX_VOCAB_TEXT_BYTES = 16 * 1024 * 1024
#: characters one text may have before cleaning; a prompt past a few hundred is truncated anyway
MAX_TEXT_CHARS = 10_000
_CONTRACTIONS = ("s", "t", "re", "ve", "m", "ll", "d")
#: what regex's IGNORECASE folds in these literals beyond lower-case: only the long s (checked over all of Unicode)
_FOLD = str.maketrans({"ſ": "s"})
#: matched by none of open_clip's alternatives (regex folds it to ι, a letter, so the negated class skips it)
_UNMATCHED = "\u0345"
#: whitespace for Python's str.split but not for regex's \s
_NOT_REGEX_SPACE = frozenset("\x1c\x1d\x1e\x1f")


@lru_cache(maxsize=1)
def byte_symbols() -> dict[int, str]:
    """The reversible byte → printable character table of GPT-2/CLIP BPE (printable bytes map to themselves)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table  # insertion order (printable bytes first) is the id order


def read_merges(path: Path) -> list[tuple[str, str]]:
    """The BPE merges of a vocabulary file, checked: size caps (compressed and not), gzip, UTF-8, line format."""
    fix = "ship open_clip's bpe_simple_vocab_16e6.txt.gz (re-export the bundle)"
    try:
        size = path.stat().st_size
        if size > MAX_VOCAB_GZ_BYTES:
            raise BundleError(f"{path}: {size:,} bytes, over the {MAX_VOCAB_GZ_BYTES:,}-byte cap; {fix}")
        with gzip.open(path, "rb") as fh:
            raw = fh.read(MAX_VOCAB_TEXT_BYTES + 1)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise BundleError(f"{path}: not a readable gzip vocabulary ({exc}); {fix}") from None
    if len(raw) > MAX_VOCAB_TEXT_BYTES:
        raise BundleError(f"{path}: unpacks to over {MAX_VOCAB_TEXT_BYTES:,} bytes (gzip bomb?); {fix}")
    try:
        lines = raw.decode("utf-8").split("\n")
    except UnicodeDecodeError:
        raise BundleError(f"{path}: not UTF-8 text; {fix}") from None
    if len(lines) < NUM_MERGES + 1:
        raise BundleError(f"{path}: {len(lines) - 1} merge lines, need {NUM_MERGES}; {fix}")
    merges = []
    for number, line in enumerate(lines[1 : NUM_MERGES + 1], start=2):
        parts = line.split()
        if len(parts) != 2 or line != f"{parts[0]} {parts[1]}":
            raise BundleError(f"{path}: line {number} is not 'SYMBOL SYMBOL' ({line[:40]!r}); {fix}")
        merges.append((parts[0], parts[1]))
    return merges


def _category(ch: str) -> str:
    """'L' letter, 'N' number, ' ' skipped (whitespace, U+0345), '.' anything else: open_clip's pattern's view."""
    if ch.isspace() and ch not in _NOT_REGEX_SPACE or ch == _UNMATCHED:
        return " "
    major = unicodedata.category(ch)[0]
    return major if major in "LN" else "."


def pre_tokenize(text: str) -> Iterator[str]:
    """open_clip's word split: the special tokens, 's 't 're 've 'm 'll 'd, letter runs, single digits, other runs.

    At each position the first alternative that matches wins, like ``regex.findall``.
    """
    i, n = 0, len(text)
    while i < n:
        for special in (SOT, EOT):
            if text[i : i + len(special)].translate(_FOLD) == special:
                yield text[i : i + len(special)]
                i += len(special)
                break
        else:
            ch = text[i]
            if ch == "'":
                after = text[i + 1 : i + 3].translate(_FOLD)
                word = next((c for c in _CONTRACTIONS if after.startswith(c)), None)
                if word is not None:
                    yield text[i : i + 1 + len(word)]
                    i += 1 + len(word)
                    continue
            kind = _category(ch)
            if kind == " ":
                i += 1
                continue
            if kind == "N":
                yield ch
                i += 1
                continue
            end = i + 1
            while end < n and _category(text[end]) == kind:
                end += 1
            yield text[i:end]
            i = end


class ClipTokenizer:
    """Text → int64 [batch, context_length] ids, equal to open_clip's ``SimpleTokenizer`` (clean='lower')."""

    def __init__(self, merges: Sequence[tuple[str, str]], context_length: int = 77, use_ftfy: bool | None = None):
        if not 3 <= context_length <= 4096:
            raise RingfoldError(f"context_length must be 3..4096, got {context_length}")
        symbols = list(byte_symbols().values())
        vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [SOT, EOT]
        self.encoder = dict(zip(vocab, range(len(vocab)), strict=True))  # a repeated symbol keeps its last id
        self.ranks = dict(zip(merges, range(len(merges)), strict=True))  # as open_clip: a repeat keeps its last
        self.sot_id, self.eot_id = self.encoder[SOT], self.encoder[EOT]
        self.context_length = context_length
        self.use_ftfy = use_ftfy
        self._bytes = byte_symbols()
        self._cache: dict[str, list[int]] = {}

    @classmethod
    def from_file(cls, path: Path, context_length: int = 77, use_ftfy: bool | None = None) -> ClipTokenizer:
        return cls(read_merges(path), context_length, use_ftfy)

    def _bpe(self, word: str) -> list[str]:
        """Merge the word's symbols, lowest-ranked pair first, the last symbol carrying '</w>'."""
        parts = [*word[:-1], word[-1] + "</w>"]
        while len(parts) > 1:
            pairs = {(a, b) for a, b in zip(parts, parts[1:], strict=False)}
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and parts[i] == best[0] and parts[i + 1] == best[1]:
                    merged.append(best[0] + best[1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        return parts

    def _word_ids(self, piece: str) -> list[int]:
        word = "".join(self._bytes[b] for b in piece.encode("utf-8"))
        ids = self._cache.get(word)
        if ids is None:
            # the special tokens pass whole (open_clip seeds its BPE cache with them)
            ids = [self.encoder[word]] if word in (SOT, EOT) else [self.encoder[s] for s in self._bpe(word)]
            if len(self._cache) < 100_000:
                self._cache[word] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        """BPE ids of one text, without SOT/EOT."""
        if not isinstance(text, str):
            raise RingfoldError(f"text must be a string, got {type(text).__name__}")
        if len(text) > MAX_TEXT_CHARS:
            raise RingfoldError(f"text of {len(text):,} characters, over the {MAX_TEXT_CHARS:,} cap: {text[:40]!r}…")
        ids: list[int] = []
        for piece in pre_tokenize(clean_text(text, self.use_ftfy)):
            ids.extend(self._word_ids(piece))
        return ids

    def __call__(self, texts: str | Sequence[str]) -> np.ndarray:
        """int64 [len(texts), context_length]: SOT, ids, EOT, zeros; too long → cut, last id EOT."""
        if isinstance(texts, str):
            texts = [texts]
        out = np.zeros((len(texts), self.context_length), dtype=np.int64)
        for row, text in enumerate(texts):
            ids = [self.sot_id, *self.encode(text), self.eot_id][: self.context_length]
            ids[-1] = self.eot_id
            out[row, : len(ids)] = ids
        return out
