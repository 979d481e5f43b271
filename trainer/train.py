"""Few-shot adapter training on a frozen open_clip model.

Only adapter parameters get gradients; the frozen weights are rebuilt from
their source at export time. CUDA with autocast (bf16 where supported, else
fp16 + GradScaler) when present, CPU fp32 otherwise.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from ringfold.errors import RingfoldError
from ringfold.trainer import data as data_mod
from ringfold.trainer.adapters import AdapterSet, get, inject
from ringfold.trainer.losses import LossWeights, compute_loss
from ringfold.trainer.models import load_clip, openclip_transform
from ringfold.trainer.run import RunRecord, save_run
from ringfold.trainer.text import class_embeddings, clip_logits

log = logging.getLogger("ringfold.train")


@dataclass
class TrainConfig:
    model: str = "ViT-B-16"
    pretrained: str | None = None
    random_init: bool = False
    init_seed: int = 0
    method: str = "arc"
    adapter: dict[str, Any] = field(default_factory=dict)  # method config overrides (rank, layers, sites, scale…)
    data: str = ""
    image_root: str | None = None
    shots: int = 16
    classes: str = "all"  # all | base | new (CoOp base-to-novel)
    epochs: int = 10
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    optimizer: str = "adamw"
    warmup_epochs: float = 1.0
    seed: int = 0
    device: str = "auto"
    amp: str = "auto"  # auto | bf16 | fp16 | off
    templates: str | None = None
    augment: bool = True
    on_bad_image: str = "skip"
    workers: int = 0
    eval_split: str = "test"
    max_eval: int | None = None
    progress: bool = True


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise RingfoldError(f"--device {spec}: no CUDA device is visible; use --device cpu")
    return torch.device(spec)


def amp_dtype(spec: str, device: torch.device) -> torch.dtype | None:
    if device.type != "cuda" or spec == "off":
        return None
    if spec == "fp16":
        return torch.float16
    if spec == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def cosine_with_warmup(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def make_optimizer(cfg: TrainConfig, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    raise RingfoldError(f"--optimizer {cfg.optimizer!r} invalid; use adamw or sgd")


def _tqdm(iterable, enabled: bool, **kw):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, **kw)


class Trainer:
    """One training run: data, model, optimisation loop, logging, run directory."""

    def __init__(self, cfg: TrainConfig, out_dir: str | Path) -> None:
        self.cfg = cfg
        self.out = Path(out_dir)
        self.device = pick_device(cfg.device)
        self.amp = amp_dtype(cfg.amp, self.device)
        seed_everything(cfg.seed)
        self.loaded = load_clip(cfg.model, cfg.pretrained, random_init=cfg.random_init, seed=cfg.init_seed)
        self.model = self.loaded.model
        method = get(cfg.method)
        self.adapter_cfg = method.config_cls.from_dict({"method": cfg.method, **cfg.adapter})
        self.adapters: AdapterSet = inject(self.model, self.adapter_cfg)
        self.model.to(self.device)
        self._load_data()

    # -- data ---------------------------------------------------------------------------------
    def _load_data(self) -> None:
        cfg = self.cfg
        splits = data_mod.load_splits(cfg.data, image_root=cfg.image_root, seed=cfg.seed)
        if cfg.classes != "all":
            splits = data_mod.subsample_classes(splits, cfg.classes)
        self.splits = splits
        self.classnames = splits.classnames
        self.templates = list(data_mod.load_templates(cfg.templates))
        train = data_mod.sample_k_shot(splits.train, cfg.shots, cfg.seed) if cfg.shots > 0 else list(splits.train)
        eval_samples = splits.test if cfg.eval_split == "test" else splits.val
        if not eval_samples:
            eval_samples = splits.val or splits.test
        if cfg.max_eval is not None and len(eval_samples) > cfg.max_eval:
            rng = random.Random(cfg.seed)
            eval_samples = sorted(rng.sample(list(eval_samples), cfg.max_eval), key=lambda s: str(s.path))
        self.train_samples = data_mod.scan_images(train, cfg.on_bad_image)
        self.eval_samples = data_mod.scan_images(eval_samples, cfg.on_bad_image) if eval_samples else []
        if not self.train_samples and cfg.epochs > 0:
            raise RingfoldError(f"{cfg.data}: no usable training images after scanning; fix or add images")
        self.eval_transform = openclip_transform(self.loaded.preprocess_cfg)
        self.train_transform = (
            openclip_transform(self.loaded.preprocess_cfg, train=True) if cfg.augment else self.eval_transform
        )

    def _loader(self, samples, transform, shuffle: bool) -> DataLoader:
        generator = torch.Generator().manual_seed(self.cfg.seed)
        return DataLoader(
            data_mod.ImageDataset(samples, transform),
            batch_size=self.cfg.batch_size,
            shuffle=shuffle,
            num_workers=self.cfg.workers,
            generator=generator,
            drop_last=False,
        )

    # -- model ----------------------------------------------------------------------------------
    @property
    def text_adapted(self) -> bool:
        return "text" in self.adapter_cfg.towers

    def _class_emb(self) -> torch.Tensor:
        return class_embeddings(self.model, self.loaded.tokenizer, self.classnames, self.templates, self.device)

    def _autocast(self):
        if self.amp is None:
            return torch.autocast(device_type=self.device.type, enabled=False)
        return torch.autocast(device_type="cuda", dtype=self.amp)

    @torch.no_grad()
    def evaluate(self) -> float | None:
        if not self.eval_samples:
            return None
        self.model.eval()
        with self._autocast():
            class_emb = self._class_emb()
            correct = 0
            for images, labels in self._loader(self.eval_samples, self.eval_transform, shuffle=False):
                logits = clip_logits(self.model, images.to(self.device), class_emb)
                correct += int((logits.argmax(-1).cpu() == labels).sum())
        return correct / len(self.eval_samples)

    # -- loop -------------------------------------------------------------------------------------
    def fit(self) -> RunRecord:
        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        log_path = self.out / "log.jsonl"
        log_path.write_text("")
        params = [p for p in self.adapters.parameters() if p.requires_grad]
        trainable = {id(p) for p in params}
        leaked = [n for n, p in self.model.named_parameters() if p.requires_grad and id(p) not in trainable]
        assert not leaked, f"frozen model parameters must not require grad: {leaked[:3]}"
        history: list[dict[str, Any]] = []
        t0 = time.time()
        acc0 = self.evaluate()
        history.append({"epoch": 0, "eval_acc": acc0, "time_s": round(time.time() - t0, 2)})
        self._append_log(log_path, history[-1])
        if cfg.epochs > 0:
            loader = self._loader(self.train_samples, self.train_transform, shuffle=True)
            steps_per_epoch = max(1, len(loader))
            total = cfg.epochs * steps_per_epoch
            optimizer = make_optimizer(cfg, params)
            scheduler = cosine_with_warmup(optimizer, int(cfg.warmup_epochs * steps_per_epoch), total)
            scaler = torch.amp.GradScaler("cuda", enabled=self.amp == torch.float16)
            weights = LossWeights.from_config(self.adapter_cfg)
            need_frozen = not self.text_adapted or weights.consistency > 0
            frozen_text_emb = self._class_emb_frozen() if need_frozen else None
            bar = _tqdm(range(total), cfg.progress, desc="train", unit="step")
            bar_iter = iter(bar) if cfg.progress else None
            step = 0
            for epoch in range(1, cfg.epochs + 1):
                self.model.train()
                term_sums: dict[str, float] = {}
                correct, seen = 0, 0
                for images, labels in loader:
                    images, labels = images.to(self.device), labels.to(self.device)
                    with self._autocast():
                        out = compute_loss(
                            self.model,
                            self.adapters,
                            images,
                            labels,
                            self._class_emb,
                            weights,
                            frozen_class_emb=frozen_text_emb,
                            text_adapted=self.text_adapted,
                        )
                    loss, logits = out.total, out.logits
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                    scheduler.step()
                    step += 1
                    for key, value in out.terms.items():
                        term_sums[key] = term_sums.get(key, 0.0) + value * len(labels)
                    correct += int((logits.argmax(-1) == labels).sum())
                    seen += len(labels)
                    if bar_iter is not None:
                        next(bar_iter, None)
                        bar.set_postfix(epoch=epoch, loss=f"{float(loss.detach()):.3f}")
                if not all(torch.isfinite(p).all() for p in params):
                    raise RingfoldError(f"training diverged (NaN/Inf adapter weights) at epoch {epoch}; lower --lr")
                acc = self.evaluate()
                row = {
                    "epoch": epoch,
                    "step": step,
                    "loss": term_sums.get("total", 0.0) / max(1, seen),
                    **{f"loss_{k}": v / max(1, seen) for k, v in term_sums.items() if k != "total"},
                    "train_acc": correct / max(1, seen),
                    "eval_acc": acc,
                    "lr": scheduler.get_last_lr()[0],
                    "time_s": round(time.time() - t0, 2),
                }
                history.append(row)
                self._append_log(log_path, row)
                log.info("epoch %d loss %.4f train_acc %.3f eval_acc %s", epoch, row["loss"], row["train_acc"], acc)
            if cfg.progress:
                bar.close()
        record = self._record(history)
        save_run(self.out, record, self.adapters)
        self._plot(history)
        return record

    @torch.no_grad()
    def _class_emb_frozen(self) -> torch.Tensor:
        self.model.eval()
        with self._autocast():
            return self._class_emb().detach()

    @staticmethod
    def _append_log(path: Path, row: dict[str, Any]) -> None:
        with open(path, "a") as fh:
            fh.write(json.dumps(row) + "\n")

    def _record(self, history: list[dict[str, Any]]) -> RunRecord:
        cfg = self.cfg
        train_settings = {k: v for k, v in asdict(cfg).items() if k not in ("adapter", "progress")}
        train_settings.update(device=str(self.device), amp=str(self.amp) if self.amp else "off")
        metrics = {
            "zero_shot_eval_acc": history[0]["eval_acc"],
            "final_eval_acc": history[-1]["eval_acc"],
            "eval_images": len(self.eval_samples),
            "train_images": len(self.train_samples),
            "trainable_parameters": self.adapters.num_parameters(),
            "chance_acc": 1.0 / len(self.classnames),
        }
        return RunRecord(
            model_name=cfg.model,
            weights=self.loaded.source,
            weights_fingerprint=self.loaded.weights_fingerprint,
            preprocess=self.loaded.preprocess_cfg,
            adapter=self.adapter_cfg,
            classnames=list(self.classnames),
            templates=list(self.templates),
            data={
                "source": self.splits.source,
                "path": str(Path(cfg.data).resolve()),
                "image_root": str(Path(cfg.image_root).resolve()) if cfg.image_root else None,
                "shots": cfg.shots,
                "classes": cfg.classes,
                "seed": cfg.seed,
            },
            train=train_settings,
            metrics=metrics,
        )

    def _plot(self, history: list[dict[str, Any]]) -> None:
        from ringfold.trainer.plots import plot_training_curves

        title = f"{self.cfg.model} ({self.loaded.source.describe()}) · {self.cfg.method}"
        plot_training_curves(history, self.out / "curves.png", title)


def train(cfg: TrainConfig, out_dir: str | Path) -> RunRecord:
    return Trainer(cfg, out_dir).fit()
