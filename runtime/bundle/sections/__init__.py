"""The manifest's optional sections: each one a pure parser, looped over by :meth:`.manifest.Manifest.parse`.

A section is a key of ``manifest.json`` that older bundles lack (they load as before) and a
parser that turns it into a typed value on the :class:`~ringfold.runtime.bundle.manifest.Manifest`.
The parsers only check and type what the manifest says; writing the files a section describes
(the raw models, DeepStream's configs, the text tower) belongs to the exporter and the layers above.
A new section (an OpenVINO cache, a signature) is one more module here and one more row of
:data:`SECTIONS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ringfold.runtime.base.fields import Fields

from ..spec import SectionContext
from . import deepstream, raw_input, text


@dataclass(frozen=True)
class Section:
    """One optional manifest section: its key, the Manifest attribute it fills, its parser."""

    key: str
    attribute: str
    parse: Callable[[Fields, SectionContext], Any]
    #: the attribute's value for a bundle without the section
    absent: Any = None


SECTIONS: tuple[Section, ...] = (
    Section(raw_input.SECTION, "raw_input", raw_input.parse_raw_input),
    Section(deepstream.SECTION, "deepstream_files", deepstream.parse_deepstream_section, ()),
    Section(text.SECTION, "text", text.parse_text_section),
)
