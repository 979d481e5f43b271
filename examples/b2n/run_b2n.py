"""Base-to-novel generalisation, the papers' protocol (CoOp/CoCoOp/MMA/AdaRing), for one dataset.

Per seed: train on the base classes with 16 shots (`ringfold train --classes base`), then score the
adapted model on the base and the new classes' test images (`ringfold evaluate`). Writes per-seed
results and the mean base / novel / H over seeds (summary.json + summary.md) under --out.

    python examples/b2n/run_b2n.py --root DATA_ROOT --dataset OxfordPets --pretrained openai
    python examples/b2n/run_b2n.py --root DATA_ROOT --dataset OxfordPets --dry-run   # print the commands

See examples/README.md for the folder layout under DATA_ROOT.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATASETS = json.loads((HERE / "datasets.json").read_text())


# ------------------------------------------------------------------------ split files CoOp does not ship
def prepare_fgvc_aircraft(root: Path, target: Path) -> None:
    """CoOp's FGVCAircraft reader: labels in variants.txt order, images_variant_{split}.txt lines 'ID variant'."""
    base = root / "fgvc_aircraft"
    names = [ln.strip() for ln in (base / "variants.txt").read_text().splitlines() if ln.strip()]
    label = {name: i for i, name in enumerate(names)}
    split = {}
    for name in ("train", "val", "test"):
        rows = []
        for line in (base / f"images_variant_{name}.txt").read_text().splitlines():
            if line.strip():
                image, variant = line.strip().split(" ", 1)
                rows.append([f"{image}.jpg", label[variant], variant])
        split[name] = rows
    target.write_text(json.dumps(split))


def prepare_imagenet(root: Path, target: Path) -> None:
    """CoOp's ImageNet reader: labels in sorted wnid order, names from classnames.txt, val used as test."""
    base = root / "imagenet"
    names = {}
    for line in (base / "classnames.txt").read_text().splitlines():
        if line.strip():
            wnid, name = line.strip().split(" ", 1)
            names[wnid] = name
    wnids = sorted(d.name for d in (base / "images" / "train").iterdir() if d.is_dir())
    split = {"train": [], "val": [], "test": []}
    for label, wnid in enumerate(wnids):
        for name, folder in (("train", "train"), ("test", "val")):
            for image in sorted((base / "images" / folder / wnid).iterdir()):
                split[name].append([f"{folder}/{wnid}/{image.name}", label, names[wnid]])
    target.write_text(json.dumps(split))


PREPARE = {"fgvc_aircraft": prepare_fgvc_aircraft, "imagenet": prepare_imagenet}


# --------------------------------------------------------------------------------------------- commands
def train_flags(args: argparse.Namespace, spec: dict, seed: int) -> list[str]:
    """The `ringfold train` flags of one seed (without --out): printed by --dry-run, parsed into a TrainConfig."""
    weights = ["--random-init"] if args.random_init else ["--pretrained", args.pretrained]
    argv = ["--model", args.model, *weights, "--method", args.method]
    argv += ["--data", str(args.root / spec["split_json"]), "--image-root", str(args.root / spec["image_root"])]
    argv += ["--classes", "base", "--shots", str(args.shots), "--seed", str(seed), "--templates", spec["template"]]
    if args.epochs is not None:
        argv += ["--epochs", str(args.epochs)]
    if args.device:
        argv += ["--device", args.device]
    return argv + args.train_arg


def evaluate_argv(args: argparse.Namespace, spec: dict, run_dir: Path, result: Path) -> list[str]:
    argv = ["evaluate", str(run_dir), "--data", str(args.root / spec["split_json"])]
    argv += ["--image-root", str(args.root / spec["image_root"]), "--out", str(result)]
    return argv + (["--device", args.device] if args.device else [])


def show(argv: list[str]) -> str:
    return "ringfold " + shlex.join(argv)


# ------------------------------------------------------------------------------------------------ summary
def summarise(dataset: str, method: str, per_seed: dict[int, dict]) -> dict:
    from ringfold.trainer.evaluate import harmonic_mean

    keys = ("base", "novel", "hm")
    mean = {k: statistics.fmean(r["accuracy"][k] for r in per_seed.values()) for k in keys}
    std = {k: statistics.pstdev([r["accuracy"][k] for r in per_seed.values()]) for k in keys}
    # the CoOp-family papers report H of the seed-averaged base and novel accuracies, not the mean of per-seed H
    mean["hm_of_means"] = harmonic_mean(mean["base"], mean["novel"])
    first = next(iter(per_seed.values()))
    return {
        "dataset": dataset,
        "method": method,
        "model": first["model"],
        "weights": first["weights"],
        "random_weights": first["random_weights"],
        "seeds": sorted(per_seed),
        "mean": mean,
        "std": std,
        "per_seed": {str(s): r["accuracy"] for s, r in sorted(per_seed.items())},
    }


def to_markdown(summary: dict) -> str:
    lines = [
        f"# Base-to-novel: {summary['dataset']} · {summary['method']} · {summary['model']} ({summary['weights']})",
        "",
        "| seed | base | novel | H |",
        "|---|---|---|---|",
    ]
    for seed, acc in summary["per_seed"].items():
        lines.append(f"| {seed} | {100 * acc['base']:.2f} | {100 * acc['novel']:.2f} | {100 * acc['hm']:.2f} |")
    m, s = summary["mean"], summary["std"]
    lines.append(
        f"| **mean** | **{100 * m['base']:.2f}** ± {100 * s['base']:.2f} | **{100 * m['novel']:.2f}** ± "
        f"{100 * s['novel']:.2f} | **{100 * m['hm_of_means']:.2f}** (papers' H of the means; "
        f"mean of per-seed H {100 * m['hm']:.2f}) |"
    )
    if summary["random_weights"]:
        lines += ["", "random weights: these numbers say nothing about accuracy on real photos."]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, required=True, help="DATA_ROOT holding the CoOp dataset folders")
    p.add_argument("--dataset", required=True, choices=sorted(DATASETS), help="one of the 11 CoOp datasets")
    p.add_argument("--method", default="arc", choices=["arc", "adaring"])
    src = p.add_mutually_exclusive_group()
    src.add_argument("--pretrained", default="openai", help="open_clip pretrained tag or checkpoint (default openai)")
    src.add_argument("--random-init", action="store_true", help="random weights (smoke tests only)")
    p.add_argument("--model", default="ViT-B-16")
    p.add_argument("--shots", type=int, default=16)
    p.add_argument("--epochs", type=int, help="training epochs (default: ringfold train's)")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N (default: ringfold's auto)")
    p.add_argument("--train-arg", action="append", default=[], metavar="ARG", help="extra `ringfold train` flag")
    p.add_argument("--out", type=Path, default=Path("runs/b2n"))
    p.add_argument("--prepare", action="store_true", help="write the split file for ImageNet / FGVCAircraft first")
    p.add_argument("--dry-run", action="store_true", help="print the commands and exit")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    spec = DATASETS[args.dataset]
    work = args.out / args.dataset / args.method
    plan = []
    for seed in args.seeds:
        run_dir, result = work / f"seed{seed}", work / f"seed{seed}.eval.json"
        plan.append((seed, run_dir, result, train_flags(args, spec, seed)))
    if args.dry_run:
        if spec.get("prepare"):
            print(f"# {spec['note']}")
        for _seed, run_dir, result, flags in plan:
            print(show(["train", *flags, "--out", str(run_dir)]))
            print(show(evaluate_argv(args, spec, run_dir, result)))
        print(f"# summary: {work / 'summary.json'} and {work / 'summary.md'}")
        return 0

    from ringfold.errors import RingfoldError

    try:
        return run_plan(args, spec, plan, work)
    except RingfoldError as exc:  # bad data, flags or runs: one line, like `ringfold` itself
        print(f"run_b2n: error: {exc}", file=sys.stderr)
        return exc.exit_code


def run_plan(args: argparse.Namespace, spec: dict, plan: list, work: Path) -> int:
    """Train each seed that has no run yet, evaluate every seed, write the summary (the library, not the CLI)."""
    from ringfold.atomic import write_json, write_text
    from ringfold.cli.options import train_config_from_argv
    from ringfold.trainer.evaluate import evaluate_run, format_result
    from ringfold.trainer.train import train

    split_json = args.root / spec["split_json"]
    if spec.get("prepare") and (args.prepare or not split_json.is_file()):
        print(f"writing {split_json} ({spec['note']})")
        PREPARE[spec["prepare"]](args.root, split_json)
    per_seed = {}
    for seed, run_dir, result, flags in plan:
        if (run_dir / "run.json").is_file():
            print(f"seed {seed}: {run_dir} already trained, evaluating it")
        else:
            print(show(["train", *flags, "--out", str(run_dir)]), flush=True)
            record = train(train_config_from_argv(flags), run_dir)
            print(record.summary(run_dir), flush=True)
        res = evaluate_run(run_dir, split_json, image_root=args.root / spec["image_root"], device=args.device or "auto")
        write_json(result, res)
        print(format_result(res), flush=True)
        per_seed[seed] = res
    summary = summarise(args.dataset, args.method, per_seed)
    write_json(work / "summary.json", summary)
    write_text(work / "summary.md", to_markdown(summary))
    print(to_markdown(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
