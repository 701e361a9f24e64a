"""Logging where no terminal is (plain lines, --quiet, TensorBoard), resume markers and the
training plots, ``spdnn predict``'s size and colour handling, and the demo's output figure
(issue 18, items 4, 7, 8 and 9)."""

from __future__ import annotations

import csv
import io
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from spdnn.cli import main
from spdnn.errors import SpdnnError
from spdnn.runs import trainer_for
from spdnn.tasks.common import fit_image
from spdnn.train import load_recipe
from spdnn.train.trainer import METRIC_GROUPS, line_interval, metric_group, plot_history
from tests.helpers import ROOT
from tests.test_train import tiny_recipe  # 8 steps, log_every 2, eval_every 4, 96x128 FCN

LINE = re.compile(r"^tiny step (\d+)/8 \| loss (\d+\.\d{4}) \| lr [\d.e-]+ \| [\d.]+ samples/s "
                  r"\| elapsed \d+:\d\d:\d\d ETA \d+:\d\d:\d\d$")
VAL = re.compile(r"^tiny step (\d+)/8 validation \| val_loss \d+\.\d{4} \| val_mcc -?\d+\.\d{4}"
                 r" \| best val_mcc -?\d+\.\d{4}$")


def _plain_console() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, width=200), buf


# -- item 4: logging ---------------------------------------------------------------------------
@pytest.mark.parametrize("log_every,total,every", [
    (10, 300, 10), (10, 500, 10), (10, 501, 20), (10, 2000, 40), (10, 100_000, 2000),
    (1, 7, 1), (50, 10**9, 20_000_000)])
def test_line_interval_rule(log_every, total, every):
    n = line_interval(log_every, total)
    assert n == every and n % log_every == 0
    lines = -(-total // n)
    assert lines <= 50
    assert lines >= 25 or n == log_every  # 25-50 lines unless the run is short


def test_a_console_that_is_no_terminal_gets_plain_lines(tmp_path: Path):
    recipe = load_recipe(tiny_recipe(tmp_path))
    console, buf = _plain_console()
    assert not console.is_terminal
    tr = trainer_for(recipe, outdir=tmp_path / "run", console=console)
    tr.run()
    text = buf.getvalue().splitlines()
    train = [LINE.match(t) for t in text if LINE.match(t)]
    assert [int(m[1]) for m in train] == [2, 4, 6, 8]  # line_every == log_every for 8 steps
    rows = [r for r in tr.history if "train_loss" in r]
    assert [m[2] for m in train] == [f"{r['train_loss']:.4f}" for r in rows]
    assert [int(m[1]) for t in text if (m := VAL.match(t))] == [4, 8]
    assert "━" not in buf.getvalue()  # no progress bar


def test_line_every_averages_the_losses_between_lines(tmp_path: Path):
    recipe = load_recipe(tiny_recipe(tmp_path))
    console, buf = _plain_console()
    tr = trainer_for(recipe, outdir=tmp_path / "run", console=console, line_every=4)
    tr.run()
    train = [m for t in buf.getvalue().splitlines() if (m := LINE.match(t))]
    losses = [r["train_loss"] for r in tr.history if "train_loss" in r]
    assert [int(m[1]) for m in train] == [4, 8]
    assert [m[2] for m in train] == [f"{np.mean(losses[0:2]):.4f}", f"{np.mean(losses[2:4]):.4f}"]


def test_a_terminal_gets_the_bar_and_no_lines(tmp_path: Path):
    recipe = load_recipe(tiny_recipe(tmp_path), ["steps=2"])
    buf = io.StringIO()
    trainer_for(recipe, outdir=tmp_path / "run",
                console=Console(file=buf, width=200, force_terminal=True)).run()
    assert "━" in buf.getvalue() and "samples/s |" not in buf.getvalue()


def test_cli_quiet_prints_one_summary_line_and_the_default_prints_lines_and_table(
        tmp_path: Path, capsys):
    path = tiny_recipe(tmp_path)
    assert main(["train", str(path), "-o", str(tmp_path / "q"), "--quiet"]) == 0
    cap = capsys.readouterr()
    lines = cap.out.strip().splitlines()
    assert len(lines) == 1, cap.out
    assert re.match(r"^tiny: 8 steps in \d+ s; val_loss \d\.\d{4}, val_mcc -?\d\.\d{4}, best "
                    r"val_mcc -?\d\.\d{4}; run folder .*q$", lines[0]), lines[0]
    assert cap.err == ""
    assert main(["train", str(path), "-o", str(tmp_path / "v"), "--set", "steps=4"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [t.split(" | ")[0] for t in out if " samples/s " in t] == ["tiny step 2/4",
                                                                      "tiny step 4/4"]
    assert any("validation after 4 steps" in t for t in out)  # the final table still prints


def test_tensorboard_without_the_package_is_a_one_line_error(tmp_path: Path, monkeypatch,
                                                             capsys):
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    recipe = load_recipe(tiny_recipe(tmp_path))
    with pytest.raises(SpdnnError) as e:
        trainer_for(recipe, outdir=tmp_path / "run", tensorboard=True)
    assert "'tensorboard' package" in str(e.value) and e.value.field == "tensorboard"
    assert not (tmp_path / "run").exists()  # refused before anything was written
    assert main(["train", str(tiny_recipe(tmp_path)), "-o", str(tmp_path / "run"),
                 "--tensorboard"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install tensorboard" in err


def test_tensorboard_event_files_hold_the_history(tmp_path: Path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    recipe = load_recipe(tiny_recipe(tmp_path))
    run = tmp_path / "run"
    trainer_for(recipe, outdir=run, progress=False, stop_after=5, tensorboard=True).run()
    tr = trainer_for(recipe, outdir=run, progress=False, resume=True, tensorboard=True)
    tr.run()
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert {"train/loss", "val/loss", "val/mcc", "lr", "speed/samples_per_s"} <= set(tags)
    loss = {e.step: e.value for e in acc.Scalars("train/loss")}
    assert sorted(loss) == [2, 4, 6, 8]  # both parts of the run, nothing twice
    want = {r["step"]: r["train_loss"] for r in tr.history if "train_loss" in r}
    assert loss == pytest.approx(want)
    assert [e.step for e in acc.Scalars("val/mcc")] == [4, 8]


# -- item 7: resume markers and plots ----------------------------------------------------------
def test_a_resume_is_recorded_in_the_history_and_the_csv(tmp_path: Path):
    path = tiny_recipe(tmp_path)
    run = tmp_path / "run"
    trainer_for(load_recipe(path), outdir=run, progress=False, stop_after=5).run()
    tr = trainer_for(load_recipe(path, ["optim.lr=0.01"]), outdir=run, progress=False,
                     resume=True)
    tr.run()
    marks = [r for r in tr.history if r.get("resumed")]
    assert marks == [{"step": 5, "resumed": True, "changes": "optim.lr: 0.05 -> 0.01"}]
    with (run / "metrics.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["step"], r["changes"]) for r in rows if r["resumed"] == "True"] == [
        ("5", "optim.lr: 0.05 -> 0.01")]
    assert all(r["resumed"] == "" for r in rows if r["step"] != "5")
    assert (run / "plots" / "loss.png").is_file() and (run / "plots" / "metrics.png").is_file()


def test_metric_groups_put_related_metrics_together_with_fixed_ranges():
    names = [g[0] for g in METRIC_GROUPS]
    unit = metric_group("accuracy")
    assert {metric_group(n) for n in ("f1", "sensitivity", "ssim", "delta1")} == {unit}
    assert METRIC_GROUPS[unit][2] == (0.0, 1.0)
    corr = metric_group("mcc")
    assert metric_group("pcc") == corr and METRIC_GROUPS[corr][2] == (-1.0, 1.0)
    assert metric_group("rmse") == metric_group("mae") != metric_group("abs_rel")
    assert metric_group("psnr") == metric_group("snr") and METRIC_GROUPS[metric_group("psnr")][1] == "dB"
    assert metric_group("loss_d") == metric_group("l_real") == names.index("losses") == 0
    assert metric_group("d_real") == metric_group("d_fake") == names.index(
        "discriminator outputs in [0, 1]")
    assert metric_group("m_global") == metric_group("k") == names.index("GAN measures")
    assert metric_group("something_new") == len(METRIC_GROUPS)
    assert metric_group("fnr") != unit  # an error rate: lower is better


def test_plot_history_copes_with_gan_logs_negative_losses_and_resumes(tmp_path: Path):
    history = [
        {"step": 1, "epoch": 0, "train_loss_d": -0.2, "train_loss_g": 0.7, "train_k": 0.0,
         "train_m_global": 0.3},
        {"step": 2, "epoch": 0, "val_loss_d": 0.1, "val_loss_g": 0.6, "val_d_real": 0.6,
         "val_d_fake": 0.4, "val_mmd": float("nan")},
        {"step": 2, "resumed": True},
        {"step": 3, "epoch": 0, "train_loss_d": 0.1, "train_loss_g": 0.5, "train_k": 0.01,
         "train_m_global": 0.2},
    ]
    written = plot_history(history, tmp_path, name="gan")
    assert [p.name for p in written] == ["loss.png", "metrics.png"]
    assert plot_history([{"step": 1, "train_loss": 0.5}], tmp_path / "one") == [
        tmp_path / "one" / "loss.png"]


# -- item 9: predict ---------------------------------------------------------------------------
def _ramp(h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return (0.3 * y / h + 0.7 * x / w).astype(np.float32)


def test_fit_image_undoes_pad_crop_and_stretch():
    img = _ramp(100, 300)
    x, undo, how = fit_image(img, 96, 128, "pad")
    assert x.shape == (96, 128) and "padded" in how
    assert np.abs(undo(x) - img).max() < 0.02  # the map comes back onto the image
    assert np.array_equal(x[0], x[25])  # rows above the image repeat its edge
    x, undo, how = fit_image(img, 96, 128, "crop")
    back = undo(x)
    assert x.shape == (96, 128) and back.shape == (100, 300)
    assert np.all(back[:, :80] == 0) and np.all(back[:, 220:] == 0)  # not seen: 0
    assert np.abs(back[:, 90:210] - img[:, 90:210]).max() < 0.02
    x, undo, how = fit_image(img, 96, 128, "stretch")
    assert "aspect 3.00 -> 1.33" in how and np.abs(undo(x) - img).max() < 0.02
    same = _ramp(96, 128)
    x, undo, how = fit_image(same, 96, 128, "pad")
    assert x is same and how == "already 96x128"


def test_predict_keeps_the_input_resolution_and_says_what_it_did(tmp_path: Path, capsys):
    from skimage.io import imread, imsave

    path = tiny_recipe(tmp_path)
    run = tmp_path / "run"
    assert main(["train", str(path), "-o", str(run), "--quiet", "--set", "steps=2"]) == 0
    rgb = (np.stack([_ramp(100, 300)] * 3, axis=2) * 255).astype(np.uint8)
    imsave(tmp_path / "wide.png", rgb, check_contrast=False)
    imsave(tmp_path / "gray.png", (_ramp(96, 128) * 255).astype(np.uint8), check_contrast=False)
    capsys.readouterr()
    out = tmp_path / "maps"
    assert main(["predict", str(run), str(tmp_path / "wide.png"), str(tmp_path / "gray.png"),
                 "-o", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    assert "100x300 RGB; RGB -> gray (luminance); scaled x0.427 to 43x128 and padded" in lines[0]
    assert "96x128 gray; already 96x128" in lines[1]
    assert imread(out / "wide_pred.png").shape == (100, 300)
    assert imread(out / "gray_pred.png").shape == (96, 128)
    assert main(["predict", str(run), str(tmp_path / "wide.png"), "-o", str(out),
                 "--fit", "crop"]) == 0
    assert "centre-cropped" in capsys.readouterr().out
    crop = imread(out / "wide_pred.png")
    assert crop.shape == (100, 300) and crop[:, :80].max() == 0
    assert main(["predict", str(run), str(tmp_path / "wide.png"), "--fit", "squash"]) == 2


# -- item 8: the demo's output figure ----------------------------------------------------------
@pytest.mark.slow  # two demo runs (merge, diagrams, a 2-step training): ~8 s
def test_demo_figure_shows_the_untrained_and_the_trained_network(tmp_path: Path, monkeypatch):
    from skimage.io import imread

    import spdnn.cli.demo as demo

    monkeypatch.setattr(demo, "DEMO_TRAIN", [
        "steps=2", "batch_size=4", "eval_every=2", "checkpoint_every=2", "data.train_size=8",
        "data.val_size=4", "log_every=1"])
    log = open(tmp_path / "log.txt", "w")  # noqa: SIM115 (the console keeps it)
    trained = demo.run_demo(tmp_path / "t", ROOT, Console(file=log), train=True)
    assert trained["figure_columns"] == ["untrained (random weights)", "after 2 training steps"]
    untrained = demo.run_demo(tmp_path / "u", ROOT, Console(file=log), train=False)
    assert untrained["figure_columns"] == ["untrained (random weights)"]
    a = imread(tmp_path / "t" / "merged_output.png")
    b = imread(tmp_path / "u" / "merged_output.png")
    assert a.shape[0] == b.shape[0] and a.shape[1] > b.shape[1] + 200  # one column more
    assert a.shape[1] > 1000  # a labelled figure, not the bare 128-pixel map
