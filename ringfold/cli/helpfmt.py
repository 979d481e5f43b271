"""``--help`` that shows every option's default, so nobody reads the source to learn what they get.

argparse's own ``ArgumentDefaultsHelpFormatter`` prints ``(default: None)`` and ``(default: False)`` for
options that have no default and for switches, repeats a default the help text already states, and shows
nothing for an option without help text. This formatter appends ``(default: X)`` only where X means
something (not None, False or empty, not a switch), writes tuples as the comma lists the options take, and
leaves alone help that already says "default".
"""

from __future__ import annotations

import argparse
import copy
import re
from typing import Any

_SAYS_DEFAULT = re.compile(r"\bdefault\b|%\(default\)", re.IGNORECASE)


def shown_default(action: argparse.Action) -> str | None:
    """The default ``--help`` shows for ``action``, as the user would type it; None where there is none to show."""
    default: Any = action.default
    if not action.option_strings or action.nargs == 0:  # positionals and switches (store_true, count, help)
        return None
    if default is None or default is False or default is argparse.SUPPRESS or default in ("", [], ()):
        return None
    if isinstance(default, (tuple, list)):
        return ",".join(str(v) for v in default)
    return f"{default:g}" if isinstance(default, float) else str(default)


def states_default(help_text: str | None) -> bool:
    """Whether the help text already says what the default is (then nothing is appended)."""
    return bool(help_text and _SAYS_DEFAULT.search(help_text))


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to each option's help where X is worth showing and not already stated."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        shown = shown_default(action)
        if shown is None or states_default(text):
            return text
        return f"{text} (default: {shown.replace('%', '%%')})"

    def _format_action(self, action: argparse.Action) -> str:
        if not (action.help and action.help.strip()) and shown_default(action) is not None:
            action = copy.copy(action)  # argparse prints no help column for an option without help text
            action.help = f"(default: {shown_default(action).replace('%', '%%')})"
        return super()._format_action(action)
