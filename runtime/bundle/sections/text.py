"""The manifest's optional ``text`` section: the exported text tower and its tokenizer (open vocabulary).

::

    "text": {"file": "text.onnx", "vocabulary": "bpe_simple_vocab_16e6.txt.gz",
             "tokenizer": "...", "context_length": 77, "embed_dim": 512,
             "input": "input_ids", "output": "text_embedding", "normalised": true,
             "logit_scale": 100.0, "templates": ["a photo of a {}."], "opset": 17, "check": {...}}

Both files must be in the manifest's sha256 set like every other member.
Bundles written before this section existed have none and load as before;
``classify --classes`` and ``relabel`` then say the bundle needs a re-export.
"""

from __future__ import annotations

from dataclasses import dataclass

from ringfold.runtime.base.fields import Fields
from ringfold.runtime.base.text_rules import forbidden_char

from ..spec import SectionContext

SECTION = "text"
TEXT_FILE = "text.onnx"
VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
TEXT_INPUT = "input_ids"
TEXT_OUTPUT = "text_embedding"
MAX_TEMPLATES = 1_000
MAX_TEMPLATE_CHARS = 1_000


@dataclass(frozen=True)
class TextInfo:
    file: str
    vocabulary: str
    context_length: int
    embed_dim: int
    logit_scale: float
    templates: tuple[str, ...]


def template_problem(template: str) -> str | None:
    """Why ``template`` cannot take a class name (None when it can): one bare '{}', no other braces, printable."""
    rest = template.replace("{}", "")
    if template.count("{}") != 1 or "{" in rest or "}" in rest:
        return f"{template[:60]!r} must contain exactly one '{{}}' (where the class name goes) and no other braces"
    if len(template) > MAX_TEMPLATE_CHARS:
        return f"{template[:60]!r} must be at most {MAX_TEMPLATE_CHARS} printable characters"
    bad = forbidden_char(template)  # the class-name rule: a prompt is text too (:mod:`.text_rules`)
    return f"{template[:60]!r} holds {bad}" if bad else None


def fill(template: str, classname: str) -> str:
    """The prompt for one class; ``template`` was checked by :func:`template_problem` (equals str.format)."""
    return template.replace("{}", classname)


def parse_text_section(f: Fields, ctx: SectionContext) -> TextInfo:
    """The checked section; ``ctx.member`` confirms a path is hashed."""
    f.string("input", choices=(TEXT_INPUT,))
    f.string("output", choices=(TEXT_OUTPUT,))
    if not f.boolean("normalised"):
        raise f.fail("must be true (text.onnx returns L2-normalised embeddings)", "normalised")
    raw = f.raw("templates")
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_TEMPLATES or not all(isinstance(t, str) for t in raw):
        raise f.fail(f"must be a list of 1..{MAX_TEMPLATES} strings", "templates")
    for i, template in enumerate(raw):
        problem = template_problem(template)
        if problem:
            raise f.fail(problem, f"templates[{i}]")
    dim = f.integer("embed_dim", lo=1, hi=1 << 16)
    scale = f.number("logit_scale", lo=1e-6, hi=1e6)
    return TextInfo(
        file=ctx.member(f, "file"),
        vocabulary=ctx.member(f, "vocabulary"),
        context_length=f.integer("context_length", lo=3, hi=4096),
        embed_dim=dim,
        logit_scale=scale,
        templates=tuple(raw),
    )
