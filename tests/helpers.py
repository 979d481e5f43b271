"""Assertions shared by the bad-input suites."""

from __future__ import annotations


def one_line_error(capsys, *needles: str) -> str:
    """stderr is exactly one line and names every needle (file, field, fix); returns it."""
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err
