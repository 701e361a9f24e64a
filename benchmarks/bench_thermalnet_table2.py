"""Kniaz et al. (Thermalnet, seed 004) Table 2 in kind: Thermalnet ("TN", the expected level of
the per-pixel softmax) and Thermalnet + 3x3 Gaussian smoothing ("TN + GS", the same trained
model) against the regression baseline (the same trunk, one channel, L2) and Thermalnet trained
without eq. 1's class re-weighting (``options.rebalance: false``), RMS of eq. 2 in levels beside
the paper's numbers, plus Thermalnet images/s (inference, batch 1 and 8).

**Data: a stand-in, not the paper's FLIR One pairs.** ``data.source: vtest`` (real RGB street
scenes from OpenCV's vtest.avi, one frame a scene, resized to 224 x 224, with the SYNTHETIC
thermal field of the MOG2 foreground: skin 33 C, cloth 28 C, ambient 22 C, noise 0.25 C,
quantised over 15..40 C), or ``synthetic`` (rendered people over scikit-image photographs,
the same thermal model) where the video is not installed: the report says which one ran.
Table 2's "TN + PP" (a Gatys et al. style reconstruction through ImageNet VGG-16, sec. 3.4)
needs pretrained weights nothing here ships: not reproduced.

    nohup nice -n 10 python benchmarks/bench_thermalnet_table2.py &   # train, time, report
    python benchmarks/bench_thermalnet_table2.py --report             # the tables from the json
    python benchmarks/bench_thermalnet_table2.py --quick              # 2 steps a row (smoke)

One thread (``torch.set_num_threads(1)``). Resumable: a finished row is kept in
``benchmarks/results/thermalnet_table2.json`` and skipped; an unfinished training continues
from its ``runs/bench_thermalnet/<row>/last.pt``. Writes ``thermalnet_table2.md``/``.json``/
``.png`` in ``benchmarks/results``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from spdnn.io import write_atomic  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RUNS = ROOT / "runs" / "bench_thermalnet"
TN_RECIPE = ROOT / "recipes/thermal/thermalnet.yaml"
ROWS = {"thermalnet": (TN_RECIPE, []),
        "thermalnet_regression": (ROOT / "recipes/thermal/thermalnet_regression.yaml", []),
        # the ablation of eq. 1's class re-weighting v (options.rebalance), same budget
        "thermalnet_no_rebalance": (TN_RECIPE, ["options.rebalance=false",
                                                "name=thermalnet_no_rebalance"]),
        # the regression at about the classification's wall time (its steps are ~10x cheaper:
        # no 256-channel head, deconvolutions and softmax at 224x224)
        "thermalnet_regression_long": (ROOT / "recipes/thermal/thermalnet_regression.yaml",
                                       ["steps=3000", "eval_every=500", "checkpoint_every=500",
                                        "name=thermalnet_regression_long"])}
LONG_STEPS = 3000
STEPS, BATCH = 300, 4
BUDGET = [f"steps={STEPS}", f"batch_size={BATCH}", "eval_every=100", "checkpoint_every=50",
          "log_every=10", "samples=4", "seed=0", "data.train_size=512", "data.val_size=64",
          "data.seed=0"]
QUICK = ["steps=2", "eval_every=2", "checkpoint_every=2", "data.train_size=4", "data.val_size=2"]
# Kniaz et al. Table 2, "Average RMS" (8-bit IR brightness), on their FLIR One test pairs
PAPER = {"Human": (9.1, 31.9, 7.5), "Microwave oven": (37.8, 60.4, 29.2),
         "Computer": (16.7, 36.5, 13.5)}


def _source() -> str:
    """``vtest`` when the video and OpenCV are here, else ``synthetic``."""
    from spdnn.data import thermal

    if "vtest" in thermal.THERMAL_SOURCES and thermal._vtest_missing(None) is None:
        return "vtest"
    return "synthetic"


def _overrides(quick: bool, source: str) -> list[str]:
    return BUDGET + [f"data.source={source}"] + (QUICK if quick else [])


def _trainer(name: str, over: list[str], quick: bool):
    from spdnn.runs import trainer_for
    from spdnn.train import load_recipe

    out = RUNS / ("quick" if quick else "full") / name
    recipe, extra = ROWS[name]
    extra = extra + (QUICK if quick else [])  # a smoke run stays 2 steps, long row included
    return trainer_for(load_recipe(recipe, over + extra), outdir=out, resume="auto",
                       progress=False, quiet=True)


def _constant_rms(train, val) -> dict[str, float]:
    """The RMS (levels) of predicting the mean training level everywhere, per image averaged:
    the score of a network that learned nothing."""
    s = n = 0.0
    for i in range(len(train)):
        y = train[i][1].double()
        s, n = s + float(y.sum()), n + y.numel()
    mean = s / n
    rms = [float(((val[i][1].double() - mean) ** 2).mean().sqrt()) for i in range(len(val))]
    return {"train_mean_level": mean, "rms": statistics.fmean(rms)}


def train_row(name: str, over: list[str], quick: bool) -> dict:
    torch.set_num_threads(1)
    tr = _trainer(name, over, quick)
    step0 = tr.step
    t0 = time.perf_counter()
    final = tr.run()
    wall = time.perf_counter() - t0
    if tr.step < tr.recipe.steps:  # stopped (a signal): not a row; a rerun resumes last.pt
        raise SystemExit(f"{name} stopped at step {tr.step} of {tr.recipe.steps}; rerun to "
                         "resume")
    return {"final": final, "wall_s_this_process": wall, "steps_this_process": tr.step - step0,
            "resumed_at": step0, "steps": tr.step,
            "params": sum(p.numel() for p in tr.models["net"].parameters())}


@torch.no_grad()
def throughput() -> dict:
    """Thermalnet inference images/s at batch 1 and 8 on one thread (forward + expected-level
    decode; freshly initialised weights, the speed does not depend on them)."""
    from spdnn.codegen import build_module
    from spdnn.spec import load
    from spdnn.tasks.thermalnet import decode_levels

    torch.set_num_threads(1)
    net = build_module(load(ROOT / "netspecs/thermalnet/thermalnet.yaml")).eval()
    out = {"threads": torch.get_num_threads()}
    for bs, reps in ((1, 10), (8, 3)):
        x = torch.rand(bs, 3, 224, 224)
        decode_levels(net(x))  # warm-up
        t0 = time.perf_counter()
        for _ in range(reps):
            decode_levels(net(x))
        out[f"batch{bs}_images_per_s"] = bs * reps / (time.perf_counter() - t0)
    return out


@torch.no_grad()
def figure(over: list[str], quick: bool, path: Path, source: str) -> Path:
    """Validation samples: image | true thermal | TN | TN + GS | regression, degrees C."""
    from spdnn.data.thermal import THERMALNET_RANGE_C
    from spdnn.io import load_checkpoint
    from spdnn.metrics import gaussian_smooth
    from spdnn.tasks.common import MapStyle, prediction_grid

    cls, reg, nrb = (_trainer(n, over, quick) for n in
                     ("thermalnet", "thermalnet_regression", "thermalnet_no_rebalance"))
    for t in (cls, reg, nrb):
        t.load_state(load_checkpoint(t.outdir / "last.pt", prefer="last.pt"))
    n = min(4, len(cls.val_ds))
    x = torch.stack([cls.val_ds[i][0] for i in range(n)])
    y = torch.stack([cls.val_ds[i][1] for i in range(n)])
    lo, hi = THERMALNET_RANGE_C
    k = (hi - lo) / 255
    tn = cls.task.decode(cls.eval_models()["net"].eval()(x))
    rg = reg.task.decode(reg.eval_models()["net"].eval()(x))
    nr = nrb.task.decode(nrb.eval_models()["net"].eval()(x))
    st = MapStyle(cmap="inferno", vmin=lo, vmax=hi, colorbar="degrees C (synthetic)")
    rows = [("image", x, MapStyle(cmap=None)), ("true (synthetic)", lo + k * y.unsqueeze(1).float(), st),
            ("TN (expectation)", lo + k * tn, st),
            ("TN + GS (3x3)", lo + k * gaussian_smooth(tn), st),
            ("TN, no re-weighting", lo + k * nr, st),
            ("regression (L2)", lo + k * rg, st)]
    return prediction_grid(rows, path, f"{source} RGB, SYNTHETIC thermal")


def report(res: dict) -> str:
    b = res["budget"]
    rows = res["rows"]
    c, r, u, rl = (rows.get(n, {}).get("final", {}) for n in ROWS)

    def f(d, key):
        v = d.get(key)
        return "-" if v is None or not math.isfinite(v) else f"{v:.2f}"

    src = res["source"]
    data = ("real RGB street scenes from OpenCV's vtest.avi (one frame a scene, 224x224) with "
            "the SYNTHETIC thermal stand-in" if src == "vtest" else
            "SYNTHETIC scenes (rendered people over scikit-image photographs) with the "
            "SYNTHETIC thermal stand-in")
    lines = [
        "# Thermalnet Table 2 in kind (Kniaz et al., seed 004)", "",
        f"Data: **{data}** (`data.source: {src}`; {res['sizes']['train']} training / "
        f"{res['sizes']['val']} validation scenes; skin 33 C, cloth 28 C, ambient 22 C, "
        "Gaussian noise 0.25 C, quantised to 256 levels over 15..40 C, 0.098 C a level). "
        "Not the paper's FLIR One pairs (1000 training / 100 test, objects Human, Microwave "
        "oven, Computer).", "",
        f"Budget: {b['steps']} steps at batch {b['batch']} per network ({LONG_STEPS} for the "
        "long regression row), Adam lr 1e-3 (the paper "
        "states no solver; DIGITS, 1000 epochs on a Titan X), seed 0, 1 CPU thread (2 cores "
        "shared with two other jobs), wall "
        + ", ".join(f"{k} {v['wall_s_this_process'] / 60:.1f} min"
                    + (f" (resumed at step {v['resumed_at']})" if v["resumed_at"] else "")
                    for k, v in rows.items()) + ".", "",
        "## Average RMS (levels; eq. 2 per image, averaged over the validation images)", "",
        "The paper's Table 2 is on its 100 test pairs (sec. 5.1; one sentence there says "
        "'for the training dataset'); ours on the held-out validation scenes. Ours are the "
        "validation metrics after the last step.", "",
        "| method | ours (levels) | ours (degrees C) | paper: Human | paper: Microwave oven | "
        "paper: Computer |", "|---|---|---|---|---|---|",
        f"| TN (expected level) | {f(c, 'val_rms')} | {f(c, 'val_rms_c')} | 9.1 | 37.8 | 16.7 |",
        "| TN + PP (style reconstruction, VGG-16) | not reproduced (needs ImageNet VGG-16 "
        "weights) | - | 31.9 | 60.4 | 36.5 |",
        f"| TN + GS (3x3 Gaussian, sigma 0.8) | {f(c, 'val_rms_gs')} | {f(c, 'val_rms_gs_c')} "
        "| 7.5 | 29.2 | 13.5 |",
        f"| TN, arg-max level | {f(c, 'val_rms_argmax')} | - | - | - | - |",
        f"| TN without the class re-weighting (v = 1) | {f(u, 'val_rms')} | {f(u, 'val_rms_c')} "
        "| - | - | - |",
        f"| TN without re-weighting + GS | {f(u, 'val_rms_gs')} | {f(u, 'val_rms_gs_c')} | - | - "
        "| - |",
        f"| TN without re-weighting, arg-max | {f(u, 'val_rms_argmax')} | - | - | - | - |",
        f"| regression baseline (L2) | {f(r, 'val_rms')} | {f(r, 'val_rms_c')} | - | - | - |",
        f"| regression + GS | {f(r, 'val_rms_gs')} | {f(r, 'val_rms_gs_c')} | - | - | - |",
        f"| regression, {LONG_STEPS} steps (about TN's wall time) | {f(rl, 'val_rms')} | "
        f"{f(rl, 'val_rms_c')} | - | - | - |",
        f"| regression, {LONG_STEPS} steps + GS | {f(rl, 'val_rms_gs')} | "
        f"{f(rl, 'val_rms_gs_c')} | - | - | - |",
        f"| constant (mean training level {res['constant']['train_mean_level']:.1f}) | "
        f"{res['constant']['rms']:.2f} | {res['constant']['rms'] * 25 / 255:.2f} | - | - | - |",
        "", f"MAE (levels): TN {f(c, 'val_mae')}, regression {f(r, 'val_mae')}. The target's "
        "own sensor noise (0.25 C = 2.55 levels, i.i.d. per pixel) cannot be predicted: no "
        "method can score an RMS below about 2.6 levels here.", ""]
    if c and r:
        lines += ["## What agrees and what does not", "", _verdict(c, r, u, res), ""]
    t = res.get("throughput")
    if t:
        lines += ["## Thermalnet inference speed", "",
                  f"Forward + expected-level decode, 224x224, {t['threads']} CPU thread "
                  "(shared machine): "
                  f"batch 1 {t['batch1_images_per_s']:.2f} images/s, batch 8 "
                  f"{t['batch8_images_per_s']:.2f} images/s.", ""]
    lines += ["![validation samples](thermalnet_table2.png)", "",
              "Reproduce: `nohup nice -n 10 python benchmarks/bench_thermalnet_table2.py &`."]
    return "\n".join(lines) + "\n"


def _verdict(c: dict, r: dict, u: dict, res: dict) -> str:
    tn, gs, rg = c["val_rms"], c["val_rms_gs"], r["val_rms"]
    parts = []
    if gs < tn - 0.005:
        parts.append(f"The 3x3 smoothing lowers Thermalnet's RMS ({tn:.2f} -> {gs:.2f} levels, "
                     f"{100 * (tn - gs) / tn:.0f}%), in the direction of Table 2 (Human 9.1 -> "
                     "7.5, 18%).")
    else:
        parts.append(f"Unlike Table 2 (Human 9.1 -> 7.5), the 3x3 smoothing does not lower "
                     f"Thermalnet's RMS here ({tn:.2f} -> {gs:.2f} levels).")
    if rg < tn:
        parts.append(f"The plain regression baseline beats the classification form "
                     f"({rg:.2f} vs {tn:.2f} levels): at this budget and on this stand-in the "
                     "paper's multinomial formulation is not the better one.")
    else:
        parts.append(f"The classification form beats the plain regression baseline ({tn:.2f} "
                     f"vs {rg:.2f} levels).")
    rl = res["rows"].get("thermalnet_regression_long", {}).get("final", {})
    if rl:
        parts.append(f"Given about the classification's wall time ({LONG_STEPS} steps), the "
                     f"regression reaches {rl['val_rms']:.2f} levels "
                     f"({'below' if rl['val_rms'] < tn else 'above'} TN's {tn:.2f}).")
    if u:
        un = u["val_rms"]
        parts.append(f"Without the class re-weighting the expected level scores {un:.2f} "
                     f"levels ({'better' if un < tn else 'worse'} than with it, {tn:.2f}): "
                     "the re-weighting raises the rare (person) levels' probabilities, which "
                     "is what it is for in colorization, and the expected level follows them.")
    if gs > tn - 0.1 * (tn - 2.6):
        parts.append("The smoothing has little to remove here: the predictions are already "
                     "smooth (13x13 score maps upsampled by the two deconvolutions, see the "
                     "figure), while Kniaz et al. report high-frequency components absent from "
                     "the real thermal images (sec. 5.1).")
    const = res["constant"]["rms"]
    names = {"thermalnet": "TN", "thermalnet_no_rebalance": "TN without re-weighting",
             "thermalnet_regression": "the regression", "thermalnet_regression_long":
             f"the regression at {LONG_STEPS} steps"}
    rms = {k: v["final"]["val_rms"] for k, v in res["rows"].items()}
    won = [names[k] for k, v in rms.items() if v < const]
    lost = [names[k] for k, v in rms.items() if v >= const]
    few = ("; the people cover about 2% of a vtest scene's pixels (measured on the training "
           "scenes)" if res["source"] == "vtest" else "")
    parts.append(f"Against the constant prediction ({const:.2f} levels{few}): "
                 + (f"{', '.join(won)} beat{'s' if len(won) == 1 else ''} it" if won
                    else "no network beats it")
                 + (f"; {', '.join(lost)} do{'es' if len(lost) == 1 else ''} not" if lost
                    else "") + ".")
    parts.append(f"Our errors are in levels of a fixed 15..40 C scale on a three-temperature "
                 f"synthetic field (constant prediction {res['constant']['rms']:.2f}), the "
                 "paper's in 8-bit brightness of real FLIR One images: the values are not "
                 "comparable, only the ordering of the methods is.")
    return " ".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--report", action="store_true", help="tables and figure from the json only")
    ap.add_argument("--quick", action="store_true", help="2 steps a row (smoke test)")
    args = ap.parse_args()
    stem = "thermalnet_table2"
    results = RUNS / "quick" if args.quick else RESULTS  # a smoke run is not a result
    results.mkdir(parents=True, exist_ok=True)
    jpath = results / f"{stem}.json"
    source = _source()
    over = _overrides(args.quick, source)
    key = {"overrides": over}
    res = json.loads(jpath.read_text()) if jpath.is_file() else {}
    if res.get("key") != key:
        res = {"key": key, "rows": {}}
    res.update(source=source, budget={"steps": 2 if args.quick else STEPS, "batch": BATCH})

    def save():
        write_atomic(jpath, json.dumps(res, indent=1, sort_keys=True))

    if not args.report:
        if "constant" not in res:
            tr = _trainer("thermalnet", over, args.quick)
            res["constant"] = _constant_rms(tr.train_ds, tr.val_ds)
            res["sizes"] = {"train": len(tr.train_ds), "val": len(tr.val_ds)}
            save()
        for name in ROWS:
            if name not in res["rows"]:
                print(f"training {name} ...", flush=True)
                res["rows"][name] = train_row(name, over, args.quick)
                save()
        if "throughput" not in res:
            res["throughput"] = throughput()
            save()
    if all((RUNS / ("quick" if args.quick else "full") / n / "last.pt").is_file()
           for n in ("thermalnet", "thermalnet_regression", "thermalnet_no_rebalance")):
        figure(over, args.quick, results / f"{stem}.png", source)
    write_atomic(results / f"{stem}.md", report(res))
    print((results / f"{stem}.md").read_text())


if __name__ == "__main__":
    main()
