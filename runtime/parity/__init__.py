"""Does the backend compute what PyTorch computed? Torch-free parity against the bundle's stored reference.

In import order: :mod:`.stats` (binomial bounds on a sample), :mod:`.metrics` (tolerances, one
comparison and its gate), :mod:`.plot` (the figure, matplotlib optional), :mod:`.report` (the report,
its files), :mod:`.stored` (the checks against the stored reference), :mod:`.raw` (the raw-input
models) and :mod:`.geometry` (open_clip's resize vs DeepStream's, a measurement).
"""
