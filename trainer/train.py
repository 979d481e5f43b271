"""Few-shot adapter training on a frozen open_clip model.

Only adapter parameters get gradients; the frozen weights are rebuilt from
their source at export time. CUDA with autocast (bf16 where supported, else
fp16 + GradScaler) when present, CPU fp32 otherwise.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from ringfold.atomic import write_json
from ringfold.errors import FieldError, RingfoldError
from ringfold.ownership import Claim, claim_folder, record_files

from . import data as data_mod
from .adapters import AdapterSet, inject
from .checkpoint import CHECKPOINT_FILE, LoopState, load_checkpoint, save_checkpoint
from .config import CONFIG_FILE, TrainConfig, load_train_config
from .data_sources import load_run_splits
from .device import amp_dtype, pick_device
from .distributed import (
    all_reduce_sum,
    barrier,
    epoch_batches,
    init_distributed,
    local_share,
    shutdown,
)
from .evaluate import count_correct
from .frozen_features import FrozenFeatureCache
from .losses import LossWeights, compute_loss, frozen_image_features
from .models import load_clip, openclip_transform
from .plots import plot_training_curves
from .run import ADAPTERS_FILE, RUN_FILE, RunData, RunRecord, save_run
from .text import class_embeddings

#: who writes a run folder, in its ownership record
RUN_COMMAND = "ringfold train"
#: every file training writes into the run folder (the only ones its record vouches for)
RUN_FILES = (CONFIG_FILE, "log.jsonl", CHECKPOINT_FILE, ADAPTERS_FILE, RUN_FILE, "curves.png")

log = logging.getLogger("ringfold.train")
#: testing aid: slow each step down so a test can kill a real run mid-epoch (seconds; unset in normal use)
_STEP_DELAY = float(os.environ.get("RINGFOLD_STEP_DELAY_S", "0") or 0)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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
    raise FieldError("optimizer", f"must be adamw or sgd, got {cfg.optimizer!r}")


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
        self.claim: Claim | None = None  # set by train(): the run folder, emptied at the first write
        self.device = pick_device(cfg.device)
        self.dist = init_distributed(self.device.type)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        self.amp = amp_dtype(cfg.amp, self.device)
        seed_everything(cfg.seed)
        self.loaded = load_clip(cfg.model, cfg.pretrained, random_init=cfg.random_init, seed=cfg.init_seed)
        self.model = self.loaded.model
        self.adapter_cfg = cfg.adapter  # resolved once, by TrainConfig
        self.adapters: AdapterSet = inject(self.model, self.adapter_cfg)
        self.model.to(self.device)
        self._load_data()

    # -- data ---------------------------------------------------------------------------------
    def _load_data(self) -> None:
        cfg = self.cfg
        splits = load_run_splits(cfg.data, image_root=cfg.image_root, seed=cfg.seed, classes=cfg.classes)
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
        self.eval_transform = openclip_transform(self.loaded.preprocess)
        self.train_transform = (
            openclip_transform(self.loaded.preprocess, train=True) if cfg.augment else self.eval_transform
        )

    def _eval_loader(self) -> DataLoader:
        dataset = data_mod.ImageDataset(self.eval_samples, self.eval_transform)
        return DataLoader(dataset, batch_size=self.cfg.batch_size, num_workers=self.cfg.workers)

    # -- model ----------------------------------------------------------------------------------
    @property
    def text_adapted(self) -> bool:
        return "text" in self.adapter_cfg.towers

    def _class_emb(self, copies: int = 1) -> torch.Tensor:
        return class_embeddings(
            self.model, self.loaded.tokenizer, self.classnames, self.templates, self.device, copies=copies
        )

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
            correct, _ = count_correct(
                self.model, self._class_emb(), self._eval_loader(), self.device, len(self.classnames)
            )
        return correct / len(self.eval_samples)

    # -- loop -------------------------------------------------------------------------------------
    def _train_step_module(self, frozen_text_emb):
        """The per-step computation as one module, so DDP can wrap it (only adapters require grad)."""
        trainer = self

        class _Step(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.adapters = trainer.adapters

            def forward(self, images, labels, loss_scale: float, weights: LossWeights, frozen_image=None):
                out = compute_loss(
                    trainer.model,
                    trainer.adapters,
                    images,
                    labels,
                    trainer._class_emb,
                    weights,
                    frozen_class_emb=frozen_text_emb,
                    text_adapted=trainer.text_adapted,
                    frozen_image=frozen_image,
                )
                return out.total * loss_scale, out

        module = _Step()
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index or 0] if self.device.type == "cuda" else None
            module = DistributedDataParallel(module, device_ids=ids)
        return module

    def fit(self, resume: bool = False) -> RunRecord:
        cfg = self.cfg
        main = self.dist.is_main
        log_path = self.out / "log.jsonl"
        params = [p for p in self.adapters.parameters() if p.requires_grad]
        trainable = {id(p) for p in params}
        leaked = [n for n, p in self.model.named_parameters() if p.requires_grad and id(p) not in trainable]
        assert not leaked, f"frozen model parameters must not require grad: {leaked[:3]}"
        global_batches = epoch_batches(len(self.train_samples), cfg.batch_size, cfg.seed, 1)
        steps_per_epoch = max(1, len(global_batches))
        total = cfg.epochs * steps_per_epoch
        optimizer = make_optimizer(cfg, params)
        scheduler = cosine_with_warmup(optimizer, int(cfg.warmup_epochs * steps_per_epoch), total)
        t0 = time.time()
        if resume:
            state = load_checkpoint(self.out, self.adapters, optimizer, scheduler)
            _count_terms_per_sample(state.sums)
            if main:
                log_path.write_text("".join(json.dumps(r) + "\n" for r in state.history))
        else:
            state = self._start_run(log_path, t0)
        if cfg.epochs > 0 and state.epoch <= cfg.epochs:
            loop = self._loop(optimizer, scheduler, params, state, total, log_path, t0)
            for epoch in range(state.epoch, cfg.epochs + 1):
                self._train_epoch(loop, epoch)
                self._end_epoch(loop, epoch)
            if cfg.progress and main:
                loop.bar.close()
        record = self._record(state.history)
        if main:
            save_run(self.out, record, self.adapters)
            self._plot(state.history)
            self._record_files()
        barrier(self.dist)
        return record

    def _start_run(self, log_path: Path, t0: float) -> LoopState:
        """A new run: the folder claimed and its config written (main process), then epoch 0's accuracy."""
        main = self.dist.is_main
        if main:
            if self.claim is not None:
                self.claim.prepare()  # --overwrite: the old run's files go only now, after every check
            self.out.mkdir(parents=True, exist_ok=True)
            write_json(self.out / CONFIG_FILE, self.cfg.to_dict())
            log_path.write_text("")
            self._record_files()
        state = LoopState()
        acc0 = self.evaluate() if main else None
        state.history.append({"epoch": 0, "eval_acc": acc0, "time_s": round(time.time() - t0, 2)})
        if main:
            self._append_log(log_path, state.history[-1])
        return state

    def _loop(self, optimizer, scheduler, params, state: LoopState, total: int, log_path: Path, t0: float) -> _Loop:
        """What every step of the loop uses: the optimiser, the loss's weights and module, the frozen-feature cache."""
        cfg = self.cfg
        weights = LossWeights.from_config(self.adapter_cfg)
        need_frozen = not self.text_adapted or weights.consistency > 0
        frozen_text_emb = self._class_emb_frozen() if need_frozen else None
        return _Loop(
            optimizer=optimizer,
            scheduler=scheduler,
            scaler=torch.amp.GradScaler("cuda", enabled=self.amp == torch.float16),
            params=params,
            weights=weights,
            step_module=self._train_step_module(frozen_text_emb),
            # without augmentation a sample's frozen features never change: pay their forward pass once
            frozen_cache=FrozenFeatureCache() if weights.consistency > 0 and not cfg.augment else None,
            dataset=data_mod.ImageDataset(self.train_samples, self.train_transform),
            bar=_tqdm(range(total), cfg.progress and self.dist.is_main, desc="train", unit="step", initial=state.step),
            state=state,
            log_path=log_path,
            t0=t0,
        )

    def _train_epoch(self, loop: _Loop, epoch: int) -> None:
        """The optimizer steps of ``epoch`` this process takes (from where a resumed run stopped)."""
        cfg, state = self.cfg, loop.state
        self.model.train()
        batches = epoch_batches(len(loop.dataset), cfg.batch_size, cfg.seed, epoch)
        first = state.step_in_epoch if epoch == state.epoch else 0
        if first == 0:
            state.sums = {}
        local = [local_share(b, self.dist) for b in batches[first:]]
        loader = DataLoader(loop.dataset, batch_sampler=local, num_workers=cfg.workers)
        for offset, (images, labels) in enumerate(loader):
            images, labels = images.to(self.device), labels.to(self.device)
            share = len(labels) * self.dist.world_size / len(batches[first + offset])
            step_weights = loop.weights.at_step(state.step)  # --aux-every K: auxiliary terms every K-th step
            with self._autocast():
                frozen_image = (
                    self._frozen_features(loop.frozen_cache, local[offset], images)
                    if step_weights.consistency > 0
                    else None
                )
                loss, out = loop.step_module(images, labels, share, step_weights, frozen_image)
            loop.optimizer.zero_grad(set_to_none=True)
            loop.scaler.scale(loss).backward()
            loop.scaler.step(loop.optimizer)
            loop.scaler.update()
            loop.scheduler.step()
            state.step += 1
            state.step_in_epoch = first + offset + 1
            _add_step_sums(state.sums, out, labels)
            if cfg.progress and self.dist.is_main:
                loop.bar.update(1)
                loop.bar.set_postfix(epoch=epoch, loss=f"{out.terms['total']:.3f}")
            if cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0:
                self._checkpoint(loop.optimizer, loop.scheduler, state)
            if _STEP_DELAY:
                time.sleep(_STEP_DELAY)

    def _end_epoch(self, loop: _Loop, epoch: int) -> None:
        """The epoch's row (losses and accuracy summed over every process, eval accuracy), logged; a checkpoint."""
        state = loop.state
        if not all(torch.isfinite(p).all() for p in loop.params):
            raise FieldError("lr", f"is too high: training diverged (NaN/Inf adapter weights) at epoch {epoch}")
        keys = sorted(state.sums)
        totals = dict(zip(keys, all_reduce_sum([state.sums[k] for k in keys], self.dist, self.device), strict=True))
        seen = max(1.0, totals.get("seen", 0.0))
        acc = self.evaluate() if self.dist.is_main else None
        row = {
            "epoch": epoch,
            "step": state.step,
            "loss": totals.get("total", 0.0) / seen,
            **{f"loss_{k}": v / max(1.0, totals[f"seen:{k}"]) for k, v in totals.items() if _is_term(k)},
            "train_acc": totals.get("correct", 0.0) / seen,
            "eval_acc": acc,
            "lr": loop.scheduler.get_last_lr()[0],
            "time_s": round(time.time() - loop.t0, 2),
        }
        state.history.append(row)
        state.epoch, state.step_in_epoch, state.sums = epoch + 1, 0, {}
        if self.dist.is_main:
            self._append_log(loop.log_path, row)
            log.info("epoch %d loss %.4f train_acc %.3f eval_acc %s", epoch, row["loss"], row["train_acc"], acc)
        self._checkpoint(loop.optimizer, loop.scheduler, state)

    def _frozen_features(self, cache: FrozenFeatureCache | None, indices, images: torch.Tensor):
        """The batch's frozen image features from ``cache`` (computed and stored on a miss); None without one."""
        if cache is None:
            return None
        found = cache.lookup(indices)
        if found is None:
            found = frozen_image_features(self.model, self.adapters, images)
            cache.store(indices, found)
        return found

    def _checkpoint(self, optimizer, scheduler, state: LoopState) -> None:
        if self.dist.is_main:
            save_checkpoint(self.out, self.adapters, optimizer, scheduler, state)
            self._record_files()
        barrier(self.dist)

    def _record_files(self) -> None:
        """Vouch for what training wrote so far (and only that) in the run's ownership record."""
        record_files(self.out, RUN_COMMAND, RUN_FILES)  # a file not written yet is left out of the record

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
        train_settings = {k: v for k, v in cfg.to_dict().items() if k not in ("adapter", "progress")}
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
            preprocess=self.loaded.preprocess,
            adapter=self.adapter_cfg,
            classnames=list(self.classnames),
            templates=list(self.templates),
            data=RunData(
                source=self.splits.source,
                path=str(Path(cfg.data).resolve()),
                image_root=str(Path(cfg.image_root).resolve()) if cfg.image_root else None,
                shots=cfg.shots,
                classes=cfg.classes,
                seed=cfg.seed,
            ),
            train=train_settings,
            metrics=metrics,
        )

    def _plot(self, history: list[dict[str, Any]]) -> None:
        title = f"{self.cfg.model} ({self.loaded.source.describe()}) · {self.cfg.method}"
        plot_training_curves(history, self.out / "curves.png", title)


def train(cfg: TrainConfig, out_dir: str | Path, overwrite: bool = False) -> RunRecord:
    """Fit adapters into the run folder ``out_dir``: new or empty, or (``overwrite``) one ringfold wrote, unchanged.

    The folder is claimed before the model loads (``claim_folder``: one writer at a time) and its
    ownership record is rewritten after every step that writes, so ``--overwrite`` and ``--resume`` can
    always tell ringfold's files from the user's.
    """
    with _claimed(out_dir, overwrite=overwrite) as claim:
        trainer = Trainer(cfg, out_dir)
        trainer.claim = claim
        try:
            return trainer.fit()
        finally:
            shutdown(trainer.dist)


@contextlib.contextmanager
def _claimed(out_dir: str | Path, overwrite: bool = False, resume: bool = False) -> Iterator[Claim | None]:
    """Claim the run folder in the process that writes it (the main one; under torchrun, rank 0)."""
    if os.environ.get("RANK", "0") != "0":
        yield None
        return
    also = " (or --resume to continue it)"
    with claim_folder(out_dir, RUN_COMMAND, overwrite=overwrite, resume=resume, also=also) as claim:
        yield claim


def resume(run_dir: str | Path) -> RunRecord:
    """Continue a killed run from RUN/checkpoint.safetensors with the settings in RUN/train_config.json."""
    run_dir = Path(run_dir)
    config_path = run_dir / CONFIG_FILE
    if not config_path.is_file():
        raise FieldError("resume", f"{run_dir} has no {CONFIG_FILE}: give a run directory written by `ringfold train`")
    cfg = load_train_config(config_path)
    with _claimed(run_dir, resume=True):
        trainer = Trainer(cfg, run_dir)
        try:
            return trainer.fit(resume=True)
        finally:
            shutdown(trainer.dist)


@dataclass
class _Loop:
    """The training loop's working set, built once before the first epoch (:meth:`Trainer._loop`)."""

    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Any
    params: list[torch.nn.Parameter]
    weights: LossWeights
    step_module: torch.nn.Module
    frozen_cache: FrozenFeatureCache | None
    dataset: Any
    bar: Any  # a tqdm bar, or the plain range when progress is off
    state: LoopState
    log_path: Path
    t0: float


def _add_step_sums(sums: dict[str, float], out, labels: torch.Tensor) -> None:
    """Add one step's loss terms and correct predictions, weighted by its batch size, to the epoch's sums."""
    for key, value in out.terms.items():
        sums[key] = sums.get(key, 0.0) + value * len(labels)
        if _is_term(key):  # counted per term: --aux-every computes some on some steps only
            sums[f"seen:{key}"] = sums.get(f"seen:{key}", 0.0) + len(labels)
    sums["correct"] = sums.get("correct", 0.0) + int((out.logits.argmax(-1) == labels).sum())
    sums["seen"] = sums.get("seen", 0.0) + len(labels)


def _is_term(key: str) -> bool:
    """A loss term in an epoch's running sums (not a count and not the accuracy)."""
    return key not in ("total", "correct", "seen") and not key.startswith("seen:")


def _count_terms_per_sample(sums: dict[str, float]) -> None:
    """Give every term of a checkpoint's running sums its own sample count ("seen:<term>").

    Terms are averaged over the samples of the steps that computed them (``--aux-every`` skips the
    auxiliary ones on most steps); checkpoints from before that counted every term on every sample.
    """
    for key in [k for k in sums if _is_term(k) and f"seen:{k}" not in sums]:
        sums[f"seen:{key}"] = sums.get("seen", 0.0)
