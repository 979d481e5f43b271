"""Classify images as they arrive — a folder to watch, or camera frames — and append JSON lines.

Meant to run under systemd on a Jetson (see README.md here). Torch-free: it
uses ringfold's runtime only. Images that cannot be decoded are reported as
an error line and moved on from; the loop never dies on bad input.

    python classify_loop.py --bundle BUNDLE --watch DIR --out predictions.jsonl [--backend tensorrt]
    python classify_loop.py --bundle BUNDLE --camera 0 --every 1.0 --out predictions.jsonl
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from ringfold.errors import ImageError, RingfoldError
from ringfold.runtime import IMAGE_EXTENSIONS, load_bundle, load_image, open_model, preprocess_image, softmax

_running = True


def _stop(*_args) -> None:
    global _running
    _running = False


def _emit(out, row: dict) -> None:
    out.write(json.dumps(row) + "\n")
    out.flush()


def _predict(bundle, model, image: Image.Image, top_k: int) -> list[dict]:
    probs = softmax(model.run(preprocess_image(image, bundle.preprocess)[None])["logits"])[0]
    order = np.argsort(-probs)[:top_k]
    return [{"label": bundle.labels[i], "probability": round(float(probs[i]), 6)} for i in order]


def watch_folder(bundle, model, folder: Path, out, top_k: int, poll: float) -> None:
    seen: set[Path] = set()
    while _running:
        for path in sorted(folder.iterdir()):
            if path in seen or path.suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            if time.time() - path.stat().st_mtime < 0.5:  # still being written
                continue
            seen.add(path)
            try:
                row = {"path": str(path), "time": time.time(), "top": _predict(bundle, model, load_image(path), top_k)}
            except ImageError as exc:
                row = {"path": str(path), "time": time.time(), "error": str(exc)}
            _emit(out, row)
        time.sleep(poll)


def watch_camera(bundle, model, index: int, out, top_k: int, every: float) -> None:
    try:
        import cv2
    except ImportError:
        raise RingfoldError("--camera needs OpenCV (on Jetson: sudo apt install python3-opencv)") from None
    cap = cv2.VideoCapture(index)
    if not cap.isOpened():
        raise RingfoldError(f"camera {index} could not be opened; check `v4l2-ctl --list-devices`")
    while _running:
        ok, frame = cap.read()
        if ok:
            image = Image.fromarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            _emit(out, {"camera": index, "time": time.time(), "top": _predict(bundle, model, image, top_k)})
        time.sleep(every)
    cap.release()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", required=True)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--watch", type=Path, help="folder to watch for new images")
    src.add_argument("--camera", type=int, help="camera index (OpenCV)")
    ap.add_argument("--out", type=Path, required=True, help="JSON lines file to append to")
    ap.add_argument("--backend", default="onnxruntime", choices=["onnxruntime", "tensorrt"])
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--provider", default="auto")
    ap.add_argument("--top-k", type=int, default=3)
    ap.add_argument("--poll", type=float, default=0.5, help="seconds between folder scans")
    ap.add_argument("--every", type=float, default=1.0, help="seconds between camera frames")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        bundle = load_bundle(args.bundle)
        model = open_model(bundle, args.precision, args.backend, args.provider)
        with open(args.out, "a") as out:
            if args.watch:
                watch_folder(bundle, model, args.watch, out, args.top_k, args.poll)
            else:
                watch_camera(bundle, model, args.camera, out, args.top_k, args.every)
    except RingfoldError as exc:
        print(f"classify_loop: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
