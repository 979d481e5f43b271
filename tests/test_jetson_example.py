import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

LOOP = Path(__file__).parents[1] / "examples" / "jetson" / "classify_loop.py"


def test_classify_loop_writes_one_json_line_per_image_and_survives_bad_files(tiny_bundle, demo_data, tmp_path):
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    for img in sorted((demo_data / "test").rglob("*.png"))[:2]:
        shutil.copy(img, incoming / img.name)
    (incoming / "broken.jpg").write_bytes(b"not a jpeg")
    past = time.time() - 10
    for p in incoming.iterdir():
        os.utime(p, (past, past))
    out = tmp_path / "pred.jsonl"
    proc = subprocess.Popen(
        [
            sys.executable,
            str(LOOP),
            "--bundle",
            str(tiny_bundle),
            "--watch",
            str(incoming),
            "--out",
            str(out),
            "--provider",
            "cpu",
            "--poll",
            "0.2",
        ]
    )
    try:
        deadline = time.time() + 60
        while time.time() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 3):
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 3
    assert sum("error" in r for r in rows) == 1 and "broken.jpg" in next(r["error"] for r in rows if "error" in r)
    labels = json.loads((tiny_bundle / "labels.json").read_text())
    assert all(r["top"][0]["label"] in labels for r in rows if "top" in r)
