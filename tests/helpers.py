"""Helpers shared by the test suites: bad-input assertions, seeded adapter weights, relative errors."""

from __future__ import annotations


def one_line_error(capsys, *needles: str) -> str:
    """stderr is exactly one line and names every needle (file, field, fix); returns it."""
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


def randomise(module, std: float = 0.3, seed: int = 0) -> None:
    """Overwrite every parameter of ``module`` with seeded N(0, std²) values (adapters start at zero)."""
    import torch  # here, not at the top: runtime-only test runs import this module without torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)


def rel_to_largest(got, want) -> float:
    """Largest difference over the reference's largest entry: fp32 in another summation order gives a few
    ulps of the largest entry; an entry-wise bound would also hold near-zero entries to that absolute size."""
    return float((got - want).abs().max() / want.abs().max().clamp_min(1e-30))


class Hung(Exception):
    """Raised by :func:`no_hang` when the code under test blocks past its deadline."""


def no_hang(seconds: int):
    """A context manager failing the test with :class:`Hung` after ``seconds`` (SIGALRM, main thread, POSIX):
    for code that used to block forever, e.g. reading a FIFO, so a regression fails instead of hanging pytest."""
    import contextlib
    import signal

    @contextlib.contextmanager
    def deadline():
        def expire(_signum, _frame):
            raise Hung(f"still running after {seconds}s: blocked")

        previous = signal.signal(signal.SIGALRM, expire)
        signal.alarm(seconds)
        try:
            yield
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)

    return deadline()
