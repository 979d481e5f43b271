"""``ringfold params`` and ``ringfold train``: the commands whose options are the config fields (``cli/options.py``)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from .. import cli_types as T
from ..errors import RingfoldError
from .options import adapter_overrides, add_adapter_options, add_config_options, train_config_from_args


# --------------------------------------------------------------------------------------------- params
def add_params(sub) -> None:
    p = sub.add_parser("params", help="trainable parameter table for a model config and adapter method")
    p.add_argument("--model", default="ViT-B-16")
    p.add_argument("--json", action="store_true")
    add_adapter_options(p, allow_all=True)
    p.set_defaults(func=cmd_params)


def cmd_params(args: argparse.Namespace) -> int:
    from ringfold.trainer.adapters import names  # torch: the [train] extra, loaded when the command runs
    from ringfold.trainer.params import format_tables, parameter_tables, tables_to_json  # the [train] extra

    every = args.method == "all"
    tables = parameter_tables(args.model, names() if every else [args.method], {} if every else adapter_overrides(args))
    if args.json:
        dumps = tables_to_json(tables)
        print(json.dumps(dumps if every else dumps[args.method], indent=2))
    else:
        print(format_tables(args.model, tables))
    return 0


# ---------------------------------------------------------------------------------------------- train
def add_train(sub) -> None:
    p = sub.add_parser("train", help="fit adapters on a frozen open_clip model")
    add_config_options(p)  # one option per TrainConfig field (trainer/config.py)
    add_adapter_options(p)
    p.add_argument("--out", help="run directory to write")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing run folder that ringfold wrote, unchanged (--resume continues one)",
    )
    p.add_argument("--resume", metavar="RUN", help="continue a killed run from its checkpoint (other flags ignored)")
    p.add_argument(
        "--nproc", type=T.positive_int, help="data-parallel processes: relaunches under torchrun (gloo/NCCL)"
    )
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    from ringfold.trainer.models import check_model_name  # torch and open_clip: the [train] extra
    from ringfold.trainer.train import resume, train  # torch: the [train] extra

    if not args.resume:
        check_model_name(args.model)  # "did you mean", before torchrun starts or any data or model loads
    if args.nproc and args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        return _launch_torchrun(args.nproc, args.argv)
    if args.resume:
        args.out = args.resume
        record = resume(args.resume)
    else:
        missing = [flag for flag, value in (("--data", args.data), ("--out", args.out)) if not value]
        if not (args.pretrained or args.random_init):
            missing.append("--pretrained TAG|FILE or --random-init")
        if missing:
            raise RingfoldError(f"train needs {', '.join(missing)} (or --resume RUN/ to continue a run)")
        record = train(train_config_from_args(args), args.out, overwrite=args.overwrite)
    if "RANK" in os.environ and os.environ["RANK"] != "0":
        return 0
    print(record.summary(args.out))
    return 0


def _launch_torchrun(nproc: int, argv: list[str]) -> int:
    """Re-run this very command (``argv``, without --nproc) under torchrun with N processes (gloo/NCCL)."""
    from ringfold.trainer.distributed import torchrun_command  # the [train] extra

    train_args, skip = [], False
    for i, arg in enumerate(argv):
        if skip or (i == 0 and arg == "train") or arg.startswith("--nproc="):
            skip = False
            continue
        skip = arg == "--nproc"
        if not skip:
            train_args.append(arg)
    command = torchrun_command(nproc, train_args)
    print("launching: " + " ".join(command), file=sys.stderr)
    return subprocess.call(command)
