"""Training-step time per adapter method, and the share spent contracting AdaRing's ring cores.

Random-weights models (no download possible). One step = class embeddings
from the text tower + image forward + CE loss + backward + AdamW step, with
the method's own objective (AdaRing adds its coarse-only and consistency
terms, so its step does more forwards). "none" has nothing to train: forward
and loss only, the floor every method pays.

    python benchmarks/bench_train_step.py [--models ringfold-tiny-vit ViT-B-16] [--batch 8] [--steps 5]
    python benchmarks/bench_train_step.py --device cuda --models ViT-B-16 ViT-L-14 --batch 32 --steps 20

On CUDA a step runs under the trainer's autocast (``--amp auto``: bf16 where supported, as ``ringfold
train`` does) and every clock is read after ``torch.cuda.synchronize()``; the contraction share is timed
with CUDA events, so measuring it adds no synchronisation inside the step. ``--profile FILE`` appends
torch.profiler's top operators of one step per method (where the device time goes).
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import emit, machine  # noqa: E402

METHODS = {
    "none": None,
    "arc": {"method": "arc", "rank": 50, "layers": "last:8"},
    "adaring": {"method": "adaring", "layers": "last:8"},
    # the full and coarse-only passes one after the other, as before the paired pass (for comparison)
    "adaring (sequential passes)": {"method": "adaring", "layers": "last:8", "paired": False},
    # --no-augment: the frozen features come from the trainer's per-sample cache after the first epoch
    "adaring (cached frozen)": {"method": "adaring", "layers": "last:8", "frozen_cached": True},
    "adaring (CE only)": {
        "method": "adaring",
        "layers": "last:8",
        "coarse_loss_weight": 0,
        "consistency_loss_weight": 0,
    },
    # --aux-every K (opt-in approximation): the auxiliary terms on every K-th step; timed over K steps
    "adaring (aux every 2)": {"method": "adaring", "layers": "last:8", "aux_every": 2},
    "adaring (aux every 3)": {"method": "adaring", "layers": "last:8", "aux_every": 3},
    "adaring (aux every 2, cached frozen)": {
        "method": "adaring",
        "layers": "last:8",
        "aux_every": 2,
        "frozen_cached": True,
    },
    "mma": {"method": "mma", "layers": "last:8"},  # = MMA's blocks 4-11 on ViT-B/16
}


class ContractionClock:
    """Time spent in ``begin_step`` (AdaRing's core contraction) without perturbing the step.

    On CPU a host clock around the call is exact. On CUDA the call only queues kernels, and a
    synchronisation inside the step would stall the launch queue of the method being timed (and only of
    methods that contract), so CUDA events are recorded around it and read after the step's final sync.
    """

    def __init__(self, device: str) -> None:
        import torch

        self.cuda = torch.device(device).type == "cuda"
        self.events: list = []
        self.host_s = 0.0

    def wrap(self, call):
        import torch

        def timed():
            if self.cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                call()
                end.record()
                self.events.append((start, end))
            else:
                t0 = time.perf_counter()
                call()
                self.host_s += time.perf_counter() - t0

        return timed

    def reset(self) -> None:
        self.events, self.host_s = [], 0.0

    def seconds(self) -> float:
        """Call after the step's final synchronisation."""
        return self.host_s + sum(start.elapsed_time(end) for start, end in self.events) / 1000


def autocast_for(device: str, amp: str):
    """The trainer's autocast for ``device`` and ``--amp`` (CUDA only; CPU steps run in fp32 as in training)."""
    import torch

    from ringfold.trainer.device import amp_dtype

    dtype = amp_dtype(amp, torch.device(device))
    return (lambda: torch.autocast(device_type="cuda", dtype=dtype)) if dtype is not None else nullcontext


def setup(model_name: str, adapter: dict | None, batch: int, device: str, amp: str = "auto"):
    """One method's model and step function, ready to time; returns (step, sync, clock, params, steps).

    ``step()`` runs ``steps`` training steps: one, or K for ``aux_every`` = K (one step with the auxiliary
    terms and K − 1 without), so that its time / ``steps`` is the average step.
    """
    import torch

    from ringfold.trainer.adapters import get, inject
    from ringfold.trainer.losses import LossWeights, compute_loss, frozen_image_features
    from ringfold.trainer.models import load_clip
    from ringfold.trainer.text import class_embeddings

    loaded = load_clip(model_name, random_init=True)
    model = loaded.model.to(device)
    size = loaded.preprocess.size
    images = torch.randn(batch, 3, *size, device=device)
    labels = torch.arange(batch, device=device) % 10
    classes = [f"class {i}" for i in range(10)]

    def class_emb(copies: int = 1):
        return class_embeddings(model, loaded.tokenizer, classes, ["a photo of a {}."], device, copies=copies)

    def sync():  # CUDA runs asynchronously: without this the clock reads launch times, not run times
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize(device)

    clock = ContractionClock(device)
    autocast = autocast_for(device, amp)
    steps = 1
    if adapter is None:

        def step():
            with torch.no_grad(), autocast():
                emb = class_emb()
                logits = model.logit_scale.exp() * model.encode_image(images, normalize=True) @ emb.t()
                torch.nn.functional.cross_entropy(logits, labels)

        params = 0
    else:
        options = {k: v for k, v in adapter.items() if k not in ("method", "frozen_cached", "paired")}
        cfg = get(adapter["method"]).config_cls(**options)
        aset = inject(model, cfg)
        aset.to(device)
        weights = LossWeights.from_config(cfg)
        with torch.no_grad(), autocast():
            aset.set_enabled(False)
            frozen = class_emb()
            aset.set_enabled(True)
        for adapter_module in aset.adapters.values():  # time the once-per-pass core contraction
            adapter_module.begin_step = clock.wrap(adapter_module.begin_step)
        opt = torch.optim.AdamW(aset.parameters(), lr=1e-3)
        params = aset.num_parameters()

        with autocast():
            frozen_image = frozen_image_features(model, aset, images) if adapter.get("frozen_cached") else None
        steps = weights.aux_every

        def step():
            for index in range(steps):
                with autocast():
                    out = compute_loss(
                        model,
                        aset,
                        images,
                        labels,
                        class_emb,
                        weights.at_step(index),
                        frozen_class_emb=frozen,
                        frozen_image=frozen_image,  # unused on a step without the consistency term
                        paired=adapter.get("paired", True),
                    )
                opt.zero_grad()
                out.total.backward()
                opt.step()

    for _ in range(2 if torch.device(device).type == "cuda" else 1):  # warm-up (CUDA: kernels, autotuning)
        step()
    sync()
    return step, sync, clock, params, steps


def profile_step(name: str, step, sync, rows: int = 20) -> str:
    """torch.profiler's top operators of one call of ``step``, by device time where there is a device."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities) as prof:
        step()
        sync()
    key = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
    return f"## {name}\n\n" + prof.key_averages().table(sort_by=key, row_limit=rows) + "\n"


def bench_model(
    model_name: str, methods: list[str], batch: int, steps: int, device: str, amp: str = "auto", profile=None
) -> dict:
    """Time every method's step in interleaved rounds and keep each one's median round.

    Interleaving makes the ratios between methods robust to a machine whose load drifts during the run
    (one method timed entirely in a busy minute would otherwise look slower than it is).
    """
    import statistics

    from ringfold.trainer.host_ops import top_level_operations

    ready = {name: setup(model_name, METHODS[name], batch, device, amp) for name in methods}
    times: dict[str, list[float]] = {name: [] for name in methods}
    contract: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(steps):
        for name, (step, sync, clock, _params, calls) in ready.items():
            clock.reset()
            sync()
            t0 = time.perf_counter()
            step()
            sync()
            times[name].append((time.perf_counter() - t0) / calls)
            contract[name].append(clock.seconds() / calls)
    ops = {}
    for name, (step, sync, _clock, _params, calls) in ready.items():
        ops[name] = top_level_operations(lambda step=step, sync=sync: (step(), sync())) / calls
    if profile is not None:
        with open(profile, "a") as f:
            for name, (step, sync, *_rest) in ready.items():
                f.write(profile_step(f"{model_name}: {name}", step, sync))
    out = {}
    for name, (_step, _sync, _contract, params, _steps) in ready.items():
        step_s = statistics.median(times[name])
        contract_s = statistics.median(contract[name])
        out[name] = {
            "step_ms": 1000 * step_s,
            "step_ms_all": [round(1000 * t, 2) for t in times[name]],
            "contract_ms": 1000 * contract_s,
            "contract_share": contract_s / step_s,
            "trainable_parameters": params,
            "host_ops": ops[name],
        }
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["ringfold-tiny-vit", "ViT-B-16"])
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=5, help="timed rounds; each method's median round is kept")
    ap.add_argument("--device", default="cpu")
    amps = ("auto", "bf16", "fp16", "off")
    ap.add_argument("--amp", default="auto", choices=amps, help="CUDA autocast, as in training")
    ap.add_argument("--profile", type=Path, help="append torch.profiler's top operators per method to this file")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()

    import torch

    from ringfold.trainer.device import amp_dtype

    amp = amp_dtype(args.amp, torch.device(args.device))
    results = {
        "weights": "random weights",
        "batch": args.batch,
        "device": args.device,
        "autocast": str(amp).removeprefix("torch.") if amp is not None else "off",
        "machine": machine(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "models": {},
    }
    if torch.device(args.device).type == "cuda":
        results["gpu"] = torch.cuda.get_device_name(args.device)
    where = results.get("gpu", args.device)
    lines = [
        f"training step, batch {args.batch}, {where}, autocast {results['autocast']} (random weights)",
        "",
        "| model | method | trainable params | step ms | × ARC step | host ops | core contraction ms | share |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for model in args.models:
        results["models"][model] = bench_model(
            model, args.methods, args.batch, args.steps, args.device, args.amp, args.profile
        )
        arc_ms = results["models"][model].get("arc", {}).get("step_ms")
        for name, r in results["models"][model].items():
            r["vs_arc"] = r["step_ms"] / arc_ms if arc_ms else None
            ratio = f"{r['vs_arc']:.2f}" if arc_ms else "–"
            lines.append(
                f"| {model} | {name} | {r['trainable_parameters']:,} | {r['step_ms']:.0f} | {ratio} | "
                f"{r['host_ops']:,.0f} | {r['contract_ms']:.2f} | {100 * r['contract_share']:.2f}% |"
            )
            print(lines[-1], flush=True)
    last = args.models[-1]
    bars = {name: r["step_ms"] for name, r in results["models"][last].items()}
    emit(
        Path(args.out),
        f"train_step_{torch.device(args.device).type}",
        results,
        "\n".join(lines),
        bars,
        f"{last} training step ({where}, autocast {results['autocast']})",
        "ms",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
