"""``ringfold params``: trainable parameters per tower / site / method, counted on the real modules."""

from __future__ import annotations

from dataclasses import dataclass, field

import open_clip

from ringfold.errors import FieldError

from .adapters.base import build_site_adapter, resolve_layers
from .config import AdapterConfig, config_from_dict
from .models import check_model_name


@dataclass
class ParamRow:
    method: str
    tower: str
    site: str
    layers: int
    shared: int
    per_layer: int
    parts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.shared + self.per_layer


def tower_shapes(model_name: str) -> dict[str, tuple[int, int]]:
    """(width, depth) of each tower, read from the open_clip config without building the model."""
    check_model_name(model_name)  # one line with "did you mean", before anything is built
    cfg = open_clip.get_model_config(model_name)
    vision, text = cfg["vision_cfg"], cfg["text_cfg"]
    if "timm_model_name" in vision or "hf_model_name" in text:
        raise FieldError("model", f"{model_name!r}: ringfold counts open_clip ViT + transformer-text configs only")
    return {"visual": (vision["width"], vision["layers"]), "text": (text["width"], text["layers"])}


def parameter_rows(model_name: str, config: AdapterConfig) -> list[ParamRow]:
    from torch import nn

    rows = []
    shared_modules = nn.ModuleDict()
    shapes = tower_shapes(model_name)
    for tower in config.towers:
        width, depth = shapes[tower]
        num_layers = len(resolve_layers(config.layers, depth))
        for site in config.site_kinds:
            adapter = build_site_adapter(config, width, num_layers, tower, site, shared_modules)
            shared_names = set(getattr(adapter, "shared_parameters", ()))
            shared = sum(
                p.numel()
                for n, p in adapter.named_parameters()
                if any(n == s or n.startswith(s + ".") for s in shared_names)
            )
            total = sum(p.numel() for p in adapter.parameters())
            rows.append(ParamRow(config.method, tower, site, num_layers, shared, total - shared, _parts(adapter)))
    cross = sum(p.numel() for p in shared_modules.parameters())
    if cross:
        rows.append(ParamRow(config.method, "both", "cross", num_layers, cross, 0))
    return rows


#: parameter-name prefixes shown under a friendlier name in the breakdown ("D": ARC's shared projection only)
_PART_ALIASES = {"mix": "combinator", "gate": "combinator", "rescale": "λ", "down": "D"}


def _parts(module) -> dict[str, int]:
    parts: dict[str, int] = {}
    shared = set(getattr(module, "shared_parameters", ()))
    for name, p in module.named_parameters():
        prefix = name.split(".")[0]
        key = prefix if prefix == "down" and prefix not in shared else _PART_ALIASES.get(prefix, prefix)
        parts[key] = parts.get(key, 0) + p.numel()
    return parts


def format_table(rows: list[ParamRow], title: str) -> str:
    header = f"{'method':<8} {'tower':<7} {'site':<5} {'layers':>6} {'shared':>10} {'per-layer':>10} {'total':>10}"
    header += "  breakdown"
    lines = [title, header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r.method:<8} {r.tower:<7} {r.site:<5} {r.layers:>6} {r.shared:>10,} {r.per_layer:>10,} {r.total:>10,}  "
            + " · ".join(f"{k} {v:,}" for k, v in r.parts.items())
        )
    lines.append("-" * len(header))
    for tower in dict.fromkeys(r.tower for r in rows):
        lines.append(
            f"{'':<8} {tower:<7} {'all':<5} {'':>6} {'':>10} {'':>10} "
            f"{sum(r.total for r in rows if r.tower == tower):>10,}"
        )
    lines.append(f"{'total':<8} {'':<7} {'':<5} {'':>6} {'':>10} {'':>10} {sum(r.total for r in rows):>10,}")
    return "\n".join(lines)


def parameter_tables(
    model_name: str, methods: list[str], overrides: dict | None = None
) -> dict[str, tuple[AdapterConfig, list[ParamRow]]]:
    """Each method's config (its defaults, with ``overrides``) and its parameter rows on ``model_name``."""
    tables = {}
    for name in methods:
        config = config_from_dict({**(overrides or {}), "method": name})
        tables[name] = (config, parameter_rows(model_name, config))
    return tables


def format_tables(model_name: str, tables: dict[str, tuple[AdapterConfig, list[ParamRow]]]) -> str:
    """Each method's table and, for more than one method, a summary with each method's share of MMA's count."""
    parts = [
        format_table(rows, f"{model_name} · {name} · layers={config.layers} sites={config.sites}") + "\n"
        for name, (config, rows) in tables.items()
    ]
    if len(tables) > 1:
        totals = {name: sum(r.total for r in rows) for name, (_, rows) in tables.items()}
        ref = totals.get("mma")
        parts.append("summary (each method at its defaults):")
        for name, total in totals.items():
            share = f"  {100 * total / ref:.1f}% of MMA" if ref else ""
            parts.append(f"  {name:<8} {total:>10,} ({total / 1e6:.3f}M){share}")
    return "\n".join(parts)


def tables_to_json(tables: dict[str, tuple[AdapterConfig, list[ParamRow]]]) -> dict[str, list[dict]]:
    return {name: [{**r.__dict__, "total": r.total} for r in rows] for name, (_, rows) in tables.items()}
