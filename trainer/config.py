"""Every setting of a training run, in one torch-free place: :class:`TrainConfig` and the adapter configs.

Each field carries its documentation and its bounds in its metadata (:func:`setting`)::

    lr: float = setting(2e-3, "--lr", V.positive_float, help="peak learning rate")

and everything else is derived from that one line:

- ``ringfold train``'s and ``ringfold params``' options are generated from it (``ringfold/cli/options.py``),
  so a new setting is one new field;
- ``__post_init__`` checks every value against the same bounds the command line enforces and raises
  :class:`~ringfold.errors.FieldError` naming the *field* (the CLI names the flag instead, a file
  reader the file);
- :func:`load_train_config` (RUN/train_config.json) and :func:`read_adapter_config` (the adapter of
  run.json and of train_config.json) read files with the same checks.

Adapter methods: :class:`AdapterConfig` holds what every method shares, one subclass per method
(:class:`ArcConfig`, :class:`AdaRingConfig`, :class:`MmaConfig`) registered in :data:`CONFIGS`; the
method's modules live in ``trainer/adapters/<method>.py``. :func:`config_from_dict` is the one way a
method config is built from a dict. A training config holds its adapter config *resolved* (every
setting, the method's defaults filled in), and that is what train_config.json and run.json store: a
resumed or exported run never re-derives it from the command line's overrides.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ringfold import values as V
from ringfold.errors import FieldError, RingfoldError
from ringfold.runtime.base.fields import read_json
from ringfold.runtime.base.limits import limits

from .schema import check_dataclass_fields, field_error, is_number, json_type, short_repr

CONFIG_FILE = "train_config.json"
_NO_DEFAULT: Any = dataclasses.MISSING


def setting(
    default: Any = _NO_DEFAULT,
    flag: str | None = None,
    kind: Callable[[str], Any] | None = None,
    *,
    help: str,
    choices: tuple[str, ...] | None = None,
    group: str | None = None,
    default_factory: Callable[[], Any] = _NO_DEFAULT,
) -> Any:
    """A config field and what the CLI and the checks need to know about it.

    ``flag``: the command-line option that sets it (None: settable from Python, JSON or
    ``--adapter-opt`` only). ``kind``: a value kind of :mod:`ringfold.values` — a
    :class:`~ringfold.values.Number` bounds the value; other kinds parse the command line's text
    (``"2,4,2"``). ``choices``: the allowed strings. ``group``: options that exclude each other
    ("weights"), or "adapter" for the options ``ringfold/cli/options.py`` adds with the adapter group.
    A bool with a flag is a switch; a flag starting with ``--no-`` (or ``--quiet``) turns it off.
    """
    metadata = {"help": help, "flag": flag, "kind": kind, "choices": choices, "group": group}
    if default_factory is not _NO_DEFAULT:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def field_metadata(cls: type, name: str) -> Mapping[str, Any]:
    """A field's metadata; a subclass that only changes a default (``layers: str = "last:2/3"``) inherits its base's."""
    for klass in cls.__mro__:
        for f in dataclasses.fields(klass) if dataclasses.is_dataclass(klass) else ():
            if f.name == name and f.metadata:
                return f.metadata
    return {}


def value_problem(cls: type, name: str, value: Any) -> str | None:
    """What is wrong with ``value`` for field ``name`` of ``cls`` by its metadata (choices, bounds), or None."""
    if value is None:
        return None
    meta = field_metadata(cls, name)
    choices = meta.get("choices")
    if choices and value not in choices:
        return f"must be one of {', '.join(choices)}, got {short_repr(value)}"
    kind = meta.get("kind")
    if isinstance(kind, V.Number):
        if not is_number(value) or (kind.cast is int and not isinstance(value, int)):
            return f"must be {'an integer' if kind.cast is int else 'a number'}, got {json_type(value)}"
        return kind.problem(value)
    return None


def check_values(config: Any) -> None:
    """Raise :class:`FieldError` for the first field of ``config`` outside its choices or bounds."""
    for f in dataclasses.fields(config):
        problem = value_problem(type(config), f.name, getattr(config, f.name))
        if problem:
            raise FieldError(f.name, problem)


# ------------------------------------------------------------------------------------------- adapters
TOWERS = ("visual", "text")
SITES = ("both", "attn", "mlp")


@dataclass
class AdapterConfig:
    """What every method shares: where adapters sit and how strongly they act.

    ``layers``: "all", "last:K" (the last K blocks of each tower), "last:p/q" (the last ⌈d·p/q⌉ of
    d blocks), "a-b" (inclusive, 0-based) or "i,j,k"; checked against the tower's depth when the adapters are injected.
    """

    method: ClassVar[str] = "none"
    towers: tuple[str, ...] = setting(TOWERS, "--towers", V.name_list, help="towers to adapt, a comma list")
    layers: str = setting(
        "last:8", "--layers", help="blocks to adapt: all | last:K | last:p/q (last ⌈d·p/q⌉ of d) | a-b | i,j,k"
    )
    sites: str = setting("both", "--sites", choices=SITES, help="adapter sites")
    scale: float = setting(1.0, "--scale", V.finite_float, help="adapter output scale s")

    def __post_init__(self) -> None:
        self.towers = V.name_list(self.towers) if isinstance(self.towers, str) else tuple(self.towers)
        if not self.towers or any(t not in TOWERS for t in self.towers):
            raise FieldError("towers", f"must be some of {', '.join(TOWERS)}, got {short_repr(list(self.towers))}")
        check_values(self)

    @property
    def site_kinds(self) -> tuple[str, ...]:
        return ("attn", "mlp") if self.sites == "both" else (self.sites,)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["towers"] = list(self.towers)
        return {"method": self.method, **d}


def ring_ranks(value: Any, name: str = "ranks") -> tuple[int, int, int]:
    """AdaRing ring ranks (R0, R1, R2): three positive integers, as a sequence or the command line's "R0,R1,R2"."""
    try:
        ranks = V.ring_ranks(value) if isinstance(value, str) else tuple(value)
    except (V.ValueKindError, TypeError):
        ranks = ()
    if len(ranks) != 3 or not all(isinstance(r, int) and not isinstance(r, bool) and r >= 1 for r in ranks):
        raise FieldError(name, f"must be three positive integers R0,R1,R2 (e.g. 2,4,2), got {short_repr(value)}")
    return ranks  # type: ignore[return-value]


@dataclass
class ArcConfig(AdapterConfig):
    """ARC (``trainer/adapters/arc.py``): ``rank`` is the bottleneck r (50 for ViT-B in the paper).

    ``mlp_lambda_init``: "zero" (identity at step 0, the default) or "xavier" (the other released
    version of the authors' code; the adapted model then differs from the frozen one at step 0).
    """

    method: ClassVar[str] = "arc"
    rank: int = setting(50, "--rank", V.positive_int, help="bottleneck r")
    dropout: float = setting(0.0, "--dropout", V.dropout_rate, help="bottleneck dropout in [0, 1), training only")
    mlp_lambda_init: str = setting("zero", choices=("zero", "xavier"), help="ARC's MLP-site λ at step 0")


@dataclass
class AdaRingConfig(AdapterConfig):
    """AdaRing (``trainer/adapters/adaring.py``). Ring ranks are (R0, R1, R2): R0 closes the ring, R1/R2
    link the shared cores to the layer core.

    Defaults (fine 2,4,2; coarse 1,2,2; both sites, both towers, last 8 blocks) give 61,888 trainable
    parameters on ViT-B/16 — 9.2 % of MMA's 674,560 (the ≤ 10 % target), of which 20,480 are the
    per-layer biases.
    """

    method: ClassVar[str] = "adaring"
    fine_ranks: tuple[int, int, int] = setting((2, 4, 2), "--fine-ranks", V.ring_ranks, help="fine ring ranks R0,R1,R2")
    coarse_ranks: tuple[int, int, int] = setting(
        (1, 2, 2), "--coarse-ranks", V.ring_ranks, help="coarse ring ranks R0,R1,R2"
    )
    combinator: str = setting(
        "static", "--combinator", choices=("static", "gated"), help="combinator (static folds; gated does not)"
    )
    bias: bool = setting(True, help="per-layer bias")
    init_std: float = setting(0.02, kind=V.non_negative_float, help="target std of A_l entries once G_lay ~ N(0, 1)")
    coarse_loss_weight: float = setting(0.5, kind=V.non_negative_float, help="λ_c: CE of the coarse-only model")
    consistency_loss_weight: float = setting(
        1.0, kind=V.non_negative_float, help="λ_g: 1 − cos(adapted, frozen) features"
    )
    aux_every: int = setting(
        1,
        "--aux-every",
        V.positive_int,
        help="compute the coarse-only and consistency terms every K-th step, weighted K·λ "
        "(1: every step, the exact objective; K > 1 is faster and only matches it on average)",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self.fine_ranks = ring_ranks(self.fine_ranks, "fine_ranks")
        self.coarse_ranks = ring_ranks(self.coarse_ranks, "coarse_ranks")


UP_INITS = ("zero", "kaiming")


@dataclass
class MmaConfig(AdapterConfig):
    """MMA (``trainer/adapters/mma.py``, DESIGN §6) defaults: the branch reads ``ln_1`` and lands on the block
    output (site kind "attn" only); blocks ⌊d/3⌋..d−1 of a d-block tower (``last:2/3``: 4–11 on ViT-B/16's 12,
    MMA's 1-based 5–12); r = 32, α = 1e-3."""

    method: ClassVar[str] = "mma"
    layers: str = "last:2/3"
    sites: str = "attn"
    scale: float = 1e-3
    rank: int = setting(32, "--rank", V.positive_int, help="bottleneck r")
    shared_relu: bool = setting(True, help="MMA's ReLU after the shared projection")
    up_init: str = setting("zero", choices=UP_INITS, help="zero: identity at step 0; kaiming: MMA's code")
    grad_compensation: bool = setting(True, help="MMA's gradient-scale layers (the branch learns as if scale were 1)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sites != "attn":
            raise FieldError(
                "sites", f"is {self.sites!r}: MMA's branch reads ln_1 and is added to the block output; use attn"
            )
        if self.grad_compensation and self.scale == 0:
            raise FieldError("scale", "is 0, which switches the MMA adapter off; use a positive scale (MMA: 1e-3)")


#: method name → config class; ``trainer/adapters/registry.py`` pairs each with its adapter modules
CONFIGS: dict[str, type[AdapterConfig]] = {cls.method: cls for cls in (AdaRingConfig, ArcConfig, MmaConfig)}


def config_class(method: Any) -> type[AdapterConfig]:
    if method not in CONFIGS:
        known = ", ".join(sorted(CONFIGS))
        raise FieldError("method", f"is {short_repr(method)}: unknown adapter method; known: {known}")
    return CONFIGS[method]


def config_from_dict(d: Mapping[str, Any]) -> AdapterConfig:
    """The one way an adapter config is built from a dict: the method's defaults, overridden by ``d``.

    ``d`` names its ``method``; keys the method does not have are refused (a typo would otherwise
    train with a default). Used for the CLI's overrides, run.json and train_config.json alike.
    """
    if "method" not in d:
        raise FieldError("method", "is missing: an adapter config names its method (arc, adaring, mma)")
    cls = config_class(d["method"])
    known = _field_names(cls)
    unknown = sorted(set(d) - known - {"method"})
    if unknown:
        owners = {key: [m for m, c in sorted(CONFIGS.items()) if key in _field_names(c)] for key in unknown}
        hint = "; ".join(f"{key} is a setting of {', '.join(methods)}" for key, methods in owners.items() if methods)
        hint = f" ({hint})" if hint else ""  # a flag of another method, not a typo: say whose
        raise RingfoldError(f"adapter config has unknown keys {unknown} for method {cls.method!r}{hint}")
    return cls(**{k: v for k, v in d.items() if k in known})


def _field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def read_adapter_config(
    d: Any, path: Path, fix: str, *, prefix: str = "adapter.", method: str | None = None
) -> AdapterConfig:
    """An adapter config read from a file: every field type- and range-checked, one line naming the field.

    ``method``: the method the file names elsewhere (train_config.json's ``method``), used when ``d``
    has none and checked when it has. The command line's text form of list settings ("2,4,2") is
    accepted, parsed as the option parses it.
    """
    where = prefix.rstrip(".")
    if not isinstance(d, dict):
        raise field_error(path, where, f"must be a mapping, got {json_type(d)}", fix)
    name = d.get("method", method)
    if name is None:
        raise field_error(path, f"{prefix}method", "is missing", fix)
    if method is not None and name != method:
        raise field_error(path, f"{prefix}method", f"is {short_repr(name)}, but field method is {method!r}", fix)
    try:
        cls = config_class(name)
    except FieldError as exc:
        raise field_error(path, f"{prefix}method", f"is invalid: {exc.problem}", fix) from None
    values = {k: v for k, v in d.items() if k != "method"}
    for f in dataclasses.fields(cls):
        kind = field_metadata(cls, f.name).get("kind")
        if isinstance(values.get(f.name), str) and kind is not None and not isinstance(kind, V.Number):
            try:
                values[f.name] = kind(values[f.name])
            except V.ValueKindError as exc:
                raise field_error(path, prefix + f.name, f"is invalid: {exc}", fix) from None
    check_dataclass_fields(cls, values, path, fix, prefix=prefix, required=False)
    try:
        return config_from_dict({"method": name, **values})
    except FieldError as exc:
        raise field_error(path, prefix + exc.field, exc.problem, fix) from None


# --------------------------------------------------------------------------------------------- training
@dataclass
class TrainConfig:
    """One training run. ``ringfold train``'s options are generated from these fields.

    ``adapter`` may be given as a dict of overrides (``{"rank": 8}``): it is resolved here, once,
    against ``method``'s defaults, and is an :class:`AdapterConfig` from then on.
    """

    model: str = setting("ViT-B-16", "--model", help="open_clip model config name")
    pretrained: str | None = setting(
        None, "--pretrained", group="weights", help="open_clip pretrained tag (e.g. openai) or a checkpoint file"
    )
    random_init: bool = setting(
        False, "--random-init", group="weights", help="random weights (tests/demos; said in every report)"
    )
    init_seed: int = setting(0, "--init-seed", V.seed, help="seed of --random-init weights")
    method: str = setting("arc", "--method", choices=tuple(CONFIGS), group="adapter", help="adapter method")
    adapter: AdapterConfig | dict[str, Any] = setting(
        default_factory=dict, group="adapter", help="the method's settings, resolved against its defaults"
    )
    data: str = setting("", "--data", help="ImageFolder dir, CSV (path,label[,split]) or CoOp split_zhou_*.json")
    image_root: str | None = setting(None, "--image-root", help="folder the CoOp split paths are relative to")
    shots: int = setting(16, "--shots", V.non_negative_int, help="images per class (0 = all)")
    classes: str = setting("all", "--classes", choices=("all", "base", "new"), help="CoOp base-to-novel subset")
    epochs: int = setting(10, "--epochs", V.non_negative_int, help="training epochs (0: keep the identity adapters)")
    batch_size: int = setting(32, "--batch-size", V.positive_int, help="images per optimizer step")
    lr: float = setting(2e-3, "--lr", V.positive_float, help="peak learning rate (cosine schedule after warm-up)")
    weight_decay: float = setting(1e-4, "--weight-decay", V.non_negative_float, help="optimizer weight decay")
    optimizer: str = setting("adamw", "--optimizer", choices=("adamw", "sgd"), help="optimizer")
    warmup_epochs: float = setting(1.0, "--warmup-epochs", V.non_negative_float, help="linear warm-up, in epochs")
    seed: int = setting(0, "--seed", V.seed, help="seed of the split, the shots, the batches and the adapters' init")
    device: str = setting("auto", "--device", help="auto | cpu | cuda | cuda:N")
    amp: str = setting("auto", "--amp", choices=("auto", "bf16", "fp16", "off"), help="CUDA autocast dtype")
    templates: str | None = setting(
        None, "--templates", help="prompt template ('a photo of a {}.'), or a .txt/.json file of them"
    )
    augment: bool = setting(True, "--no-augment", help="train on the eval transform (no random crops)")
    on_bad_image: str = setting("skip", "--on-bad-image", choices=("skip", "fail"), help="an undecodable image")
    workers: int = setting(0, "--workers", V.non_negative_int, help="DataLoader worker processes")
    eval_split: str = setting("test", choices=("test", "val"), help="the split the per-epoch accuracy is on")
    max_eval: int | None = setting(
        None, "--max-eval", V.positive_int, help="evaluate on at most this many images per epoch"
    )
    progress: bool = setting(True, "--quiet", help="no progress bars")
    checkpoint_every: int = setting(
        0, "--checkpoint-every", V.non_negative_int, help="also checkpoint every N steps (0: epoch ends)"
    )

    def __post_init__(self) -> None:
        check_values(self)
        if isinstance(self.adapter, AdapterConfig):
            if self.adapter.method != self.method:
                raise FieldError("method", f"is {self.method!r}, but the adapter config is {self.adapter.method!r}")
            return
        overrides = dict(self.adapter)
        if overrides.get("method", self.method) != self.method:
            raise FieldError("method", f"is {self.method!r}, but the adapter settings name {overrides['method']!r}")
        self.adapter = config_from_dict({**overrides, "method": self.method})

    def to_dict(self) -> dict[str, Any]:
        """What RUN/train_config.json holds: every field, the adapter config resolved (all its settings)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["adapter"] = self.adapter.to_dict()  # type: ignore[union-attr]
        return d


def load_train_config(path: Path) -> TrainConfig:
    """Read RUN/train_config.json: every field present, of its annotated type and in range, nothing else.

    An adapter section without every setting (written by ringfold before the config was stored
    resolved) gets the method's defaults for the rest.
    """
    fix = f"the run directory is damaged — restore {CONFIG_FILE} or start a new run with `ringfold train`"
    d = read_json(path, fix, limits().max_json_bytes, allow_nan=True)
    check_dataclass_fields(TrainConfig, d, path, fix)
    for f in dataclasses.fields(TrainConfig):
        problem = value_problem(TrainConfig, f.name, d[f.name])
        if problem:
            raise field_error(path, f.name, problem, fix)
    if d["device"] != "auto":
        import torch

        try:
            torch.device(d["device"])
        except RuntimeError:
            got = short_repr(d["device"])
            raise field_error(path, "device", f"must be auto, cpu, cuda or cuda:N, got {got}", fix) from None
    adapter = read_adapter_config(d["adapter"], path, fix, method=d["method"])
    try:
        return TrainConfig(**{**d, "adapter": adapter})
    except FieldError as exc:
        raise field_error(path, exc.field, exc.problem, fix) from None
