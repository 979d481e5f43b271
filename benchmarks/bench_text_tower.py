"""Class embeddings through the adapted text tower, forward + backward: whole context vs up to the longest EOT.

What a training step pays for its text side (``trainer/text.py``). Random-weights ViT-B/16 with ARC
adapters on the text tower (rank 50, last 8 blocks), one template ("a photo of a {}."), median of
interleaved runs. "full context" is open_clip's ``encode_text`` over all 77 tokens, the way ringfold
ran it before; "to longest EOT" is what ringfold runs now.

    python benchmarks/bench_text_tower.py [--model ViT-B-16] [--classes 10 100] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import emit, machine  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="ViT-B-16")
    ap.add_argument("--classes", nargs="+", type=int, default=[10, 100])
    ap.add_argument("--runs", type=int, default=5, help="timed runs per way, interleaved; the median is kept")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()

    import torch

    from ringfold.trainer.adapters import get, inject
    from ringfold.trainer.models import load_clip
    from ringfold.trainer.text import encode_text, prompt_length

    loaded = load_clip(args.model, random_init=True)
    model = loaded.model
    aset = inject(model, get("arc").config_cls(rank=50, layers="last:8", towers=("text",)))
    ways = {
        "full context": lambda tokens: model.encode_text(tokens, normalize=True),
        "to longest EOT": lambda tokens: encode_text(model, tokens),
    }
    results = {"weights": "random weights", "model": args.model, "machine": machine(), "rows": {}}
    results["torch_threads"] = torch.get_num_threads()
    lines = [
        f"text tower forward + backward, {args.model}, ARC text adapters (random weights)",
        "",
        "| classes | tokens run | full context ms | to longest EOT ms | speed-up | max abs diff |",
        "|---|---|---|---|---|---|",
    ]
    bars = {}
    for count in args.classes:
        tokens = loaded.tokenizer([f"a photo of a class {i}." for i in range(count)])
        times: dict[str, list[float]] = {name: [] for name in ways}
        for run in range(args.runs + 1):  # run 0 warms up
            for name, fn in ways.items():
                aset.zero_grad()
                t0 = time.perf_counter()
                fn(tokens).sum().backward()
                if run:
                    times[name].append(1000 * (time.perf_counter() - t0))
        with torch.no_grad():
            diff = float((ways["full context"](tokens) - ways["to longest EOT"](tokens)).abs().max())
        full, short = (statistics.median(times[name]) for name in ways)
        length = prompt_length(model, tokens)
        results["rows"][str(count)] = {
            "tokens_full": tokens.shape[1],
            "tokens_run": length,
            "full_ms": full,
            "short_ms": short,
            "speedup": full / short,
            "max_abs_diff": diff,
        }
        lines.append(
            f"| {count} | {length} of {tokens.shape[1]} | {full:.0f} | {short:.0f} | {full / short:.1f}× | {diff:.1e} |"
        )
        print(lines[-1], flush=True)
        bars.update({f"{count} classes, {name}": statistics.median(times[name]) for name in ways})
    emit(Path(args.out), "text_tower_cpu", results, "\n".join(lines), bars, f"{args.model} text tower fwd+bwd", "ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
