"""Errors a user can act on.

Every problem caused by input (a file, a flag, a bundle) is raised as a
:class:`RingfoldError` whose message is one line naming the file and the fix;
the CLI prints it without a traceback and exits with ``exit_code``.
"""

from __future__ import annotations


class RingfoldError(Exception):
    """Bad input: one-line message that names the file and the fix. Exit code 2."""

    exit_code = 2


class FieldError(RingfoldError):
    """A setting with a bad value, named by its FIELD (``lr``, ``rank``): the library speaks of fields.

    A file reader turns it into ``FILE: field NAME PROBLEM; FIX``; the CLI names the flag that sets
    the field instead (``--lr``), because that is what the user typed.
    """

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"field {field} {problem}")
        self.field = field
        self.problem = problem


class ImageError(RingfoldError):
    """An image file that cannot be decoded into an RGB picture."""


class BundleError(RingfoldError):
    """A deploy bundle that is incomplete, modified or from an incompatible version."""


class GateFailed(Exception):
    """A parity gate failed: the outputs disagree beyond the stated tolerance. Exit code 1."""

    exit_code = 1
