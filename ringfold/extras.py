"""Which optional packages each command needs, so a runtime-only install says what to add in one line.

The base install (numpy, Pillow, ONNX Runtime) is what a Jetson runs:
classify, parity against the stored reference, bench, and build-engine with
JetPack's TensorRT. Training and export need PyTorch; they are the
workstation's job. Without this table a device user meets a
``ModuleNotFoundError: torch`` traceback and exit code 1, which ringfold
uses for "parity gate failed".
"""

from __future__ import annotations

import importlib.util

from . import __version__
from .errors import RingfoldError

#: the file ``pip wheel --no-deps -w dist .`` writes (pure Python: the same file for x86_64 and aarch64)
WHEEL = f"ringfold-{__version__}-py3-none-any.whl"

#: the import names behind each extra in pyproject.toml (what must import for its commands to run)
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "train": ("torch", "torchvision", "open_clip", "tensorly", "safetensors"),
    "export": ("torch", "torchvision", "open_clip", "tensorly", "safetensors", "onnx"),
    "check": ("onnx",),
    "trt": ("onnx", "polygraphy"),
    "sign": ("model_signing", "OpenSSL", "cryptography"),  # model-signing imports pyOpenSSL without declaring it
}

#: the smallest extra that brings each optional module
MODULE_EXTRA: dict[str, str] = {
    "torch": "train",
    "torchvision": "train",
    "open_clip": "train",
    "tensorly": "train",
    "safetensors": "train",
    "tqdm": "train",
    "matplotlib": "train",
    "onnx": "check",
    "polygraphy": "trt",
    "model_signing": "sign",
    "OpenSSL": "sign",
    "cryptography": "sign",
}

RUNTIME_COMMANDS = (
    "classify, evaluate BUNDLE --images, parity (stored reference), bench, check, build-engine, deepstream and triton"
)

#: commands that need more than the runtime-only install, and the extra that brings it
COMMAND_EXTRA: dict[str, str] = {
    "params": "train",
    "train": "train",
    "compress": "train",
    "export": "export",
    "demo": "export",
}


def needed_extra(command: str, live_parity: bool = False) -> str | None:
    """The extra ``ringfold COMMAND`` needs beyond the runtime; ``parity --run`` rebuilds the PyTorch model."""
    if command == "parity" and live_parity:
        return "train"
    return COMMAND_EXTRA.get(command)


def missing_module(modules: tuple[str, ...]) -> str | None:
    """The first of ``modules`` that cannot be imported here, without importing any of them."""
    for name in modules:
        try:
            if importlib.util.find_spec(name) is None:
                return name
        except (ImportError, ValueError):
            return name
    return None


def pip_install_extra(extra: str) -> str:
    """How to add ringfold's ``[extra]``. ringfold is on no package index, so asking pip for it by name fails
    (or finds someone else's package): the extra comes with the wheel built on the workstation."""
    return (
        f"build the wheel on the workstation (`pip wheel --no-deps -w dist .` in the ringfold checkout), copy it "
        f"here, then `pip install 'dist/{WHEEL}[{extra}]'`"
    )


def install_hint(command: str, module: str, extra: str | None = None) -> str:
    """One line: what is missing for ``command`` and how to install it from the wheel."""
    extra = extra or MODULE_EXTRA.get(module, "export")
    jetson = ""
    if module in ("torch", "torchvision"):
        jetson = " (on a Jetson, install NVIDIA's PyTorch wheel for your JetPack first)"
    return (
        f"`ringfold {command}` needs {module}, which is not installed: {pip_install_extra(extra)}{jetson}; "
        f"without it ringfold runs {RUNTIME_COMMANDS}"
    )


def require(command: str, extra: str) -> None:
    """Refuse in one line (exit 2) before any work when ``extra``'s packages are not importable."""
    missing = missing_module(EXTRA_MODULES[extra])
    if missing:
        raise RingfoldError(install_hint(command, missing, extra))


def optional_module(exc: ModuleNotFoundError) -> str | None:
    """The optional package behind an import failure, or None when it is not one of ours (a real bug)."""
    top = (exc.name or "").split(".")[0]
    return top if top in MODULE_EXTRA else None
