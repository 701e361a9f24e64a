"""The person-crop extraction of ``data.source: vtest`` (spdnn.data.people) on the real OpenCV
vtest.avi (795 frames, 768 x 576, real RGB people): time on one core, crops, the frame split.

Rows: the SPADE-SR crops (40 x 64) with the foreground detector (the default), the same with
the HOG people detector, and Thermalnet's scenes (224 x 224). Each row extracts without the
cache (``cache=False``, OpenCV and torch on one thread), then the default row of each mode is
read through the cache once, which warms ``$SPDNN_CACHE`` / ``~/.cache/spdnn`` for the training
benchmarks. Results: ``benchmarks/results/thermal_data.md`` / ``.json`` (rows already in the
json are skipped: rerun to resume).

    nice -n 10 python benchmarks/bench_thermal_data.py
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
NAME = "thermal_data"

ROWS = {
    "crops 40x64, foreground": dict(size=(40, 64), mode="crops", settings={}),
    "crops 40x64, HOG": dict(size=(40, 64), mode="crops", settings={"detector": "hog"}),
    "scenes 224x224, foreground": dict(size=(224, 224), mode="scenes", settings={}),
}


def run_row(row: dict) -> dict:
    import cv2

    from spdnn.data import people as P

    settings = P.PeopleSettings(**row["settings"])
    t0 = time.perf_counter()
    c = P.extract_people(P.VTEST_PATH, row["size"], row["mode"], settings, cache=False,
                         progress=False)
    seconds = time.perf_counter() - t0
    train, val = P.split_by_frames(c, settings.val_fraction, settings.gap_frames)
    return {"seconds": round(seconds, 2), "windows": len(c), "frames_read": len(set(
        c.frame.tolist())), "train": len(train), "val": len(val),
        "per_frame": round(len(c) / max(1, len(set(c.frame.tolist()))), 2),
        "mask_fraction_median": round(float(np.median(c.mask.mean(axis=(1, 2)))), 4),
        "opencv": cv2.__version__}


def main() -> None:
    import cv2
    import torch

    from spdnn.data import people as P
    from spdnn.io import write_atomic

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    js = RESULTS / f"{NAME}.json"
    done = json.loads(js.read_text()) if js.is_file() else {}
    for name, row in ROWS.items():
        if name in done:
            continue
        print(f"{name} ...", flush=True)
        done[name] = run_row(row)
        print(f"  {done[name]}", flush=True)
        write_atomic(js, json.dumps(done, indent=1) + "\n")
    cached = {}
    for size, mode in (((40, 64), "crops"), ((224, 224), "scenes")):
        t0 = time.perf_counter()
        c = P.extract_people(P.VTEST_PATH, size, mode, progress=False)
        cached[mode] = (str(c.path), round(time.perf_counter() - t0, 2))
    lines = [
        "# Person crops from OpenCV's vtest.avi (data.source: vtest)",
        "",
        "Real RGB people: OpenCV's sample video vtest.avi (795 frames, 768 x 576, a street seen "
        "from above; Debian opencv-doc, `make opencv-vtest`). The thermal side the thermal tasks "
        "pair with these crops is the SYNTHETIC stand-in of spdnn.data.thermal, not measured.",
        "",
        f"One extraction each, no cache, OpenCV and torch on 1 thread (`cv2.setNumThreads(1)`), "
        f"on a 2-core machine shared with other jobs (nice 10), {platform.python_version()} / "
        f"OpenCV {next(iter(done.values()))['opencv']}. Default settings "
        f"(spdnn.data.people.PeopleSettings): every 5th frame read (159 frames), MOG2 from the "
        f"median of 25 frames, validation = frames >= 636, training = frames < 611.",
        "",
        "| row | seconds | windows | frames with one | per frame | train / val | median mask "
        "fraction |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in done.items():
        lines.append(f"| {name} | {r['seconds']} | {r['windows']} | {r['frames_read']} | "
                     f"{r['per_frame']} | {r['train']} / {r['val']} | "
                     f"{r['mask_fraction_median']} |")
    lines += ["", "Reading the cache (warmed by this run): "
              + "; ".join(f"{m} {t} s ({p})" for m, (p, t) in cached.items()), ""]
    write_atomic(RESULTS / f"{NAME}.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
