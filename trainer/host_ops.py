"""How many operations a piece of training code issues: what a host-bound GPU step's time follows.

On a GPU a training step with ringfold's small adapters is bound by the host (Python, autograd, one
kernel launch per operation), not by the device, so its operation count is a device-independent
measure of its speed there. The benchmark reports it and the tests hold AdaRing's count below ARC's.
"""

from __future__ import annotations

from collections.abc import Callable


def top_level_operations(fn: Callable[[], object]) -> int:
    """ATen operations ``fn()`` issues from Python or autograd; those nested inside another are not counted."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()

    def top_level(event) -> bool:
        parent = event.cpu_parent
        return event.name.startswith("aten::") and not (parent is not None and parent.name.startswith("aten::"))

    return sum(1 for event in prof.events() if top_level(event))
