"""CPU backends (issue 26): ONNX Runtime and OpenVINO, every precision of a ViT-B/16 bundle, batch 1 and 8, interleaved.

ViT-B/16 with RANDOM weights (no download): a synthetic ARC run (rank 50, last 8 blocks) exported with
``ringfold export`` (fp32, fp16, int8 calibrated on generated demo images, int8-dynamic; 32 reference
images). Timed round-robin in one process, the order shuffled each round, so that the load other jobs put
on a shared machine falls on every configuration alike (compare ratios, not absolute milliseconds):

- ringfold's configurations: ONNX Runtime CPU at each bundle variant; ringfold's OpenVINO backend at each of
  its precisions (inference precision pinned), each with its parity gate run on the bundle's reference set;
- the peer: OpenVINO as a user would run the bundle's ONNX files by hand (``PERFORMANCE_HINT=LATENCY``,
  static shapes, the host's default inference precision — bf16 on AMX/AVX-512-BF16 CPUs);
- OpenVINO with a dynamic batch dimension, to choose between reshaping per batch size and one dynamic model.

Writes benchmarks/results/bench_cpu_backends.{json,md}: per batch, ringfold's fastest parity-passing
configuration over the fastest peer configuration (≤ 1.0: ringfold at least as fast), and the fraction of
the machine's peak (17.6 GMACs per image; the peak from the CPU flags, core count and clock, see :func:`peak`).

    python benchmarks/bench_cpu_backends.py [--bundle B] [--rounds 5] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_results  # noqa: E402

GMACS_PER_IMAGE = 17.6  # ViT-B/16 at 224 px
BATCHES = (1, 8)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", help="a ViT-B/16 bundle with fp32 fp16 int8 int8-dynamic (default: export one)")
    ap.add_argument("--rounds", type=int, default=5, help="round-robin passes over every configuration")
    ap.add_argument("--runs", type=int, default=4, help="timed calls per configuration, batch and round")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bundle_dir = Path(args.bundle) if args.bundle else export_bundle(Path(tmp))
        results = measure(bundle_dir, args.rounds, args.runs)
    write_results(Path(args.out), "bench_cpu_backends", results, table(results))
    print(table(results))
    return 0


def export_bundle(tmp: Path) -> Path:
    """A random-weights ViT-B/16 ARC run, exported by ``ringfold export`` with every precision."""
    from ringfold.demo_data import make_demo_dataset
    from ringfold.trainer.run import write_synthetic_run

    classes = make_demo_dataset(tmp / "data", per_class=16, size=256, seed=1)
    run = write_synthetic_run(tmp / "run", "ViT-B-16", {"method": "arc", "rank": 50, "layers": "last:8"}, classes)
    bundle = tmp / "bundle"
    cmd = [sys.executable, "-m", "ringfold", "export", str(run), "--out", str(bundle), "--quiet",
           "--precision", "fp32", "fp16", "int8", "int8-dynamic", "--calib", str(tmp / "data" / "train"),
           "--ref-images", str(tmp / "data" / "test"), "--ref-count", "32"]  # fmt: skip
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    print(f"export: {time.perf_counter() - t0:.1f} s", flush=True)
    return bundle


def configurations(bundle) -> dict[str, tuple[str, object]]:
    """name → (kind, opener): ringfold's ORT and OpenVINO configurations, the peer's, one dynamic-shape one."""
    from ringfold.runtime.backends.openvino.model import open_openvino_model, openvino_precisions
    from ringfold.runtime.backends.registry import open_model

    out: dict[str, tuple[str, object]] = {}
    for precision in bundle.variants:
        out[f"onnxruntime {precision}"] = ("ringfold", partial(open_model, bundle, precision, "onnxruntime", "cpu"))
    for precision in openvino_precisions(bundle):
        out[f"openvino {precision}"] = ("ringfold", partial(open_openvino_model, bundle, precision))
    for precision in ("fp32", "bf16", "int8-bf16"):
        dynamic = partial(open_openvino_model, bundle, precision, shapes="dynamic")
        out[f"openvino {precision} (dynamic batch)"] = ("dynamic", dynamic)
    for variant in ("fp32", "int8"):
        out[f"OpenVINO by hand on {bundle.variants[variant].file}"] = (
            "peer",
            partial(ByHand, bundle.model_path(variant)),
        )
    return out


class ByHand:
    """What a user writes: read the ONNX file, reshape to the batch, compile with PERFORMANCE_HINT=LATENCY."""

    def __init__(self, path: Path) -> None:
        import openvino as ov

        self.core, self.path, self.compiled = ov.Core(), path, {}

    def run(self, x: np.ndarray):
        if len(x) not in self.compiled:
            model = self.core.read_model(str(self.path))
            model.reshape({model.inputs[0].any_name: list(x.shape)})
            compiled = self.core.compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY"})
            self.compiled[len(x)] = (compiled, compiled.create_infer_request())
        compiled, request = self.compiled[len(x)]
        return request.infer({0: x})

    @property
    def hint(self) -> str:
        from ringfold.runtime.backends.openvino.model import inference_precision

        return inference_precision(next(iter(self.compiled.values()))[0])


def measure(bundle_dir: Path, rounds: int, runs: int) -> dict:
    """Gates, then round-robin timing; p50 over every round's samples."""
    from ringfold.runtime.bundle.loader import load_bundle
    from ringfold.runtime.parity.gates import run_gate

    bundle = load_bundle(bundle_dir)
    openers = configurations(bundle)
    gates = {}
    for name, (kind, opener) in openers.items():  # one model at a time: memory
        if kind == "ringfold":
            gates[name] = run_gate(bundle, opener(), name.split()[1])
            print(f"parity gate {name}: {'pass' if gates[name] else 'FAIL'}", flush=True)
    configs = {name: (kind, opener()) for name, (kind, opener) in openers.items()}
    inputs = {b: np.random.default_rng(0).standard_normal((b, 3, *bundle.manifest.input_size)).astype(np.float32)
              for b in BATCHES}  # fmt: skip
    samples: dict[tuple[str, int], list[float]] = {(n, b): [] for n in configs for b in BATCHES}
    for _, model in configs.values():  # compile every shape and warm up before the clock runs
        for b in BATCHES:
            model.run(inputs[b])
    order = list(configs)
    for r in range(rounds):
        random.Random(r).shuffle(order)  # no configuration always runs first or last in a round
        for name in order:
            model = configs[name][1]
            for b in BATCHES:
                for _ in range(runs):
                    t0 = time.perf_counter()
                    model.run(inputs[b])
                    samples[(name, b)].append((time.perf_counter() - t0) * 1000)
        print(f"round {r + 1}/{rounds} done", flush=True)
    return summarise(bundle, configs, gates, samples, runs)


def per_round_ratios(ours: list[float], peer: list[float], runs: int) -> list[float]:
    """Each round's p50 ratio (ringfold over peer): how far the ratio moves from one round to the next."""
    rounds = range(0, min(len(ours), len(peer)), runs)
    return [float(np.median(ours[i : i + runs]) / np.median(peer[i : i + runs])) for i in rounds]


def summarise(bundle, configs, gates, samples, runs: int) -> dict:
    rows = []
    for (name, b), s in samples.items():
        kind = configs[name][0]
        rows.append({"config": name, "kind": kind, "batch": b, "p50_ms": float(np.median(s)),
                     "p90_ms": float(np.percentile(s, 90)), "n": len(s), "parity": gates.get(name)})  # fmt: skip
    best = {}
    for b in BATCHES:
        ours = min((r for r in rows if r["batch"] == b and r["kind"] == "ringfold" and r["parity"]),
                   key=lambda r: r["p50_ms"])  # fmt: skip
        peer = min((r for r in rows if r["batch"] == b and r["kind"] == "peer"), key=lambda r: r["p50_ms"])
        gmacs = GMACS_PER_IMAGE * b / (ours["p50_ms"] / 1000)
        rounds = per_round_ratios(samples[(ours["config"], b)], samples[(peer["config"], b)], runs)
        best[str(b)] = {"ringfold": ours, "peer": peer, "ratio_ringfold_over_peer": ours["p50_ms"] / peer["p50_ms"],
                        "ratio_per_round": rounds, "ringfold_gmacs_per_s": gmacs}  # fmt: skip
    peer_hints = {name: model.hint for name, (kind, model) in configs.items() if kind == "peer"}
    return {"model": bundle.describe(), "weights": "random weights", "machine": machine(), "peak": peak(),
            "rows": rows, "best": best, "peer_inference_precision": peer_hints}  # fmt: skip


def peak() -> dict:
    """The machine's multiply-accumulate peak, from /proc/cpuinfo: cores × clock × MACs per cycle per core.

    MACs per cycle per core: AMX (amx_int8 / amx_bf16) 1024 int8 / 512 bf16 (Intel: 2048 int8 and 1024 bf16
    operations, a MAC being two); else AVX-512 VNNI 128 int8 (two 512-bit FMA ports × 64) and AVX-512 BF16 64;
    fp32 FMA 32 with AVX-512 (16 with AVX2). The clock is the nominal one /proc/cpuinfo reports (turbo ignored).
    """
    text = Path("/proc/cpuinfo").read_text()
    flags = set(next(line for line in text.splitlines() if line.startswith("flags")).split(":")[1].split())
    mhz = float(next(line for line in text.splitlines() if line.startswith("cpu MHz")).split(":")[1])
    cores = text.count("processor\t:")
    int8 = 1024 if "amx_int8" in flags else 128 if "avx512_vnni" in flags else 64
    bf16 = 512 if "amx_bf16" in flags else 64 if "avx512_bf16" in flags else 0
    fp32 = 32 if "avx512f" in flags else 16
    giga = cores * mhz / 1000
    used = sorted(flags & {"amx_int8", "amx_bf16", "avx512_vnni", "avx512_bf16", "avx512f", "avx2"})
    return {"cores": cores, "mhz": mhz, "int8_gmacs": giga * int8, "bf16_gmacs": giga * bf16,
            "fp32_gmacs": giga * fp32, "macs_per_cycle_per_core": {"int8": int8, "bf16": bf16, "fp32": fp32},
            "flags_used": used}  # fmt: skip


def table(results: dict) -> str:
    m, pk = results["machine"], results["peak"]
    lines = [
        f"{results['model']} — random weights; CPU: {m.get('cpu')}, {m.get('cpu_count')} cores; "
        f"onnxruntime {m.get('onnxruntime')}, openvino {m.get('openvino')}; interleaved round-robin, one process",
        "",
        "| configuration | kind | parity (reference set) | batch 1 p50 ms | batch 8 p50 ms |",
        "|---|---|---|---|---|",
    ]
    by = {(r["config"], r["batch"]): r for r in results["rows"]}
    for name in dict.fromkeys(r["config"] for r in results["rows"]):
        r1, r8 = by[(name, 1)], by[(name, 8)]
        gate = {True: "pass", False: "FAIL", None: "—"}[r1["parity"]]
        lines.append(f"| {name} | {r1['kind']} | {gate} | {r1['p50_ms']:.1f} | {r8['p50_ms']:.1f} |")
    lines.append("")
    for b, x in results["best"].items():
        ours, peer = x["ringfold"], x["peer"]
        share = x["ringfold_gmacs_per_s"] / pk["int8_gmacs"]
        lines.append(
            f"- batch {b}: ringfold's fastest parity-passing ({ours['config']}) {ours['p50_ms']:.1f} ms vs the "
            f"fastest by hand ({peer['config']}) {peer['p50_ms']:.1f} ms: ratio {x['ratio_ringfold_over_peer']:.3f} "
            f"(per round {min(x['ratio_per_round']):.3f}–{max(x['ratio_per_round']):.3f}); "
            f"{x['ringfold_gmacs_per_s']:.0f} GMAC/s = {share:.1%} of the int8 peak ({pk['int8_gmacs']:.0f} GMAC/s), "
            f"{x['ringfold_gmacs_per_s'] / pk['bf16_gmacs']:.1%} of the bf16 peak ({pk['bf16_gmacs']:.0f})"
            if pk["bf16_gmacs"]
            else ""
        )
    lines.append(f"- peer inference precision (host default): {results['peer_inference_precision']}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
