"""The README demo: merge the thesis' three iris parents (App. A), render, compile, run.

``spdnn demo -o out/demo`` writes into the output folder:

* ``merged.yaml`` and ``merge_report.md``: the SPDNN merge of ``netspecs/iris/appendix_a``;
* ``labels_parent_*.svg``, ``parallel.svg``, ``contracted.svg``, ``side_by_side.svg``: diagrams
  (``.dot`` files instead when Graphviz's ``dot`` program is missing);
* ``merged_net.py``: the standalone PyTorch module, which is then imported and run on a real
  grayscale photograph shipped with scikit-image (``camera``, resized to 96x128), as the
  iris networks take 96x128 grayscale images;
* ``camera_96x128.png``: that input;
* ``merged_output.png``: a labelled figure of the merged network's output maps on a synthetic
  validation eye (with its ground-truth mask) and on that photograph: the untrained network
  (random weights, a flat ~0.5 map) and, unless ``--no-train``, the same network after the
  demo's short training run, side by side on one [0, 1] colour bar.
"""

from __future__ import annotations

import importlib.util
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from spdnn.cli.console import out, plural
from spdnn.errors import SpdnnError
from spdnn.io import save_figure, write_atomic

if TYPE_CHECKING:
    import numpy as np

IRIS_A = "netspecs/iris/appendix_a"


def real_gray_image(height: int, width: int) -> np.ndarray:
    """scikit-image's ``camera`` photograph resized to ``(height, width)``, float32 in [0, 1]."""
    import numpy as np
    from skimage.data import camera
    from skimage.transform import resize

    img = camera().astype(np.float32) / 255.0
    return resize(img, (height, width), anti_aliasing=True).astype(np.float32)


def _save_png(path: Path, img: np.ndarray) -> None:
    import numpy as np
    from skimage.io import imsave

    imsave(path, (np.clip(img, 0, 1) * 255).astype(np.uint8), check_contrast=False)


def validation_eye(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The first validation eye of ``recipes/base/iris.yaml`` (synthetic, degraded, data seed
    0 + 10,000): ``(image, mask)``, float32 ``(height, width)`` in [0, 1]."""
    from spdnn.data.iris import SyntheticIrisDataset

    img, mask = SyntheticIrisDataset(1, seed=10_000, degrade=True, height=height, width=width,
                                     cache=False)[0]
    return img[0].numpy(), mask[0].numpy()


def output_figure(path: Path, samples: list[tuple[str, np.ndarray, np.ndarray | None]],
                  outputs: list[tuple[str, list[np.ndarray]]], title: str) -> Path:
    """``merged_output.png``: one row per sample ``(name, image, mask or None)``, columns input,
    ground truth and one per ``(label, maps)`` of ``outputs`` (one ``(H, W)`` map in [0, 1] per
    sample), each map with its value range below it, one colour bar for the outputs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cols = 2 + len(outputs)
    fig, axes = plt.subplots(len(samples), cols, figsize=(2.35 * cols + 1.0, 2.15 * len(samples) + 0.5),
                             squeeze=False, layout="constrained")
    heads = ["input", "ground truth (mask)"] + [label for label, _ in outputs]
    im = None
    for i, (name, img, mask) in enumerate(samples):
        panels = [img, mask] + [maps[i] for _, maps in outputs]
        for j, (ax, a) in enumerate(zip(axes[i], panels)):
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(heads[j], fontsize=9)
            if a is None:  # a blank panel of the image's shape
                ax.imshow(np.full(img.shape, 0.92), cmap="gray", vmin=0, vmax=1)
                ax.text(0.5, 0.5, "none (not an eye)", ha="center", va="center", fontsize=8,
                        color="0.4", transform=ax.transAxes)
                continue
            shown = ax.imshow(a, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            if j >= 2:
                im = shown
                ax.set_xlabel(f"values {a.min():.3f} to {a.max():.3f}", fontsize=8)
        axes[i][0].set_ylabel(name, fontsize=9)
    if im is not None:
        cb = fig.colorbar(im, ax=list(axes[:, 2:].flat), shrink=0.9, aspect=20)
        cb.set_label("output (sigmoid): P(iris)", fontsize=8)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path, dpi=150)


def _maps(net, images: list[np.ndarray]) -> list[np.ndarray]:
    """The network's ``(H, W)`` output maps of ``(H, W)`` images (eval mode, no gradients; the
    network's mode is restored afterwards)."""
    import torch

    was_training = net.training
    net.eval()
    p = next(net.parameters())
    with torch.inference_mode():
        outs = [net(torch.from_numpy(im)[None, None].to(p.device).contiguous(
            memory_format=torch.channels_last))[0, 0].float().cpu().numpy() for im in images]
    net.train(was_training)
    return outs


DEMO_TRAIN = ["steps=200", "batch_size=8", "eval_every=200", "checkpoint_every=200",
              "data.train_size=1600", "data.val_size=64", "log_every=10"]


def run_demo(outdir: Path, root: Path, console: Console, train: bool = True) -> dict:
    """Run the demo; returns a summary dict (paths, shapes, timings) for tests.

    Raises:
        SpdnnError: the iris netspecs are missing or invalid.
    """
    import torch

    from spdnn import render as R
    from spdnn import spec as S
    from spdnn.codegen import emit_module
    from spdnn.graph import merge, parent_graph
    from spdnn.report import merge_markdown, merge_summary, merge_tables
    from spdnn.shapes import infer

    t_start = time.perf_counter()
    outdir.mkdir(parents=True, exist_ok=True)
    paths = sorted((root / IRIS_A).glob("*.yaml"))
    parents = [S.load(p) for p in paths]
    console.rule("1. SPDNN merge of the three iris parents (thesis App. A)")
    for p in paths:
        console.print(f"  parent: {p.relative_to(root)}")
    result = merge(parents)
    for table in merge_tables(result.report):
        console.print(table)
    for line in merge_summary(result.report):
        console.print(line)
    write_atomic(outdir / "merged.yaml", S.dump(result.spec, header="SPDNN merge of the thesis "
                                                 "App. A iris parents (spdnn demo)"))
    write_atomic(outdir / "merge_report.md", merge_markdown(result.report))

    console.rule("2. Diagrams")
    ext = ".svg" if shutil.which("dot") else ".dot"
    if ext == ".dot":
        console.print("[yellow]Graphviz 'dot' not found: writing .dot files "
                      "(apt-get install graphviz for SVG)[/yellow]")
    written = []
    for i, spec in enumerate(parents, 1):
        written.append(R.save(R.labelled_diagram(parent_graph(spec), title=spec.name),
                              outdir / f"labels_parent_{i}{ext}"))
    written.append(R.save(R.parallel_diagram(result), outdir / f"parallel{ext}"))
    written.append(R.save(R.contracted_diagram(result), outdir / f"contracted{ext}"))
    written.append(R.save(R.side_by_side(result), outdir / f"side_by_side{ext}"))
    written.append(R.save(R.netspec_diagram(result.spec), outdir / f"merged_netspec{ext}"))
    for w in written:
        console.print(f"  wrote {w}")

    console.rule("3. Compile to PyTorch and run on a real image")
    src = emit_module(result.spec)
    module_path = outdir / "merged_net.py"
    write_atomic(module_path, src)
    console.print(f"  wrote {module_path} ({len(src.splitlines())} lines, imports only torch)")
    modspec = importlib.util.spec_from_file_location("spdnn_demo_merged_net", module_path)
    mod = importlib.util.module_from_spec(modspec)
    assert modspec.loader is not None
    modspec.loader.exec_module(mod)
    cls = next(v for k, v in vars(mod).items() if isinstance(v, type)
               and issubclass(v, torch.nn.Module) and v is not torch.nn.Module)
    torch.manual_seed(0)
    net = cls().eval().to(memory_format=torch.channels_last)
    c, h, w = result.spec.inputs[0].shape
    img = real_gray_image(h, w)
    _save_png(outdir / "camera_96x128.png", img)
    x = torch.from_numpy(img)[None, None].contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        net(x)  # warm-up
        t0 = time.perf_counter()
        reps = 5
        for _ in range(reps):
            y = net(x)
        dt = (time.perf_counter() - t0) / reps
    eye, eye_mask = validation_eye(h, w)
    samples = [("synthetic eye (validation)", eye, eye_mask), ("camera photograph", img, None)]
    figure = output_figure(outdir / "merged_output.png", samples,
                           [("untrained (random weights)", _maps(net, [eye, img]))],
                           "merged network output, untrained (spdnn demo --no-train)")
    info = infer(result.spec)
    console.print(f"  input  {tuple(x.shape)} (skimage camera, 96x128 grayscale)")
    console.print(f"  output {tuple(y.shape)}, values in [{y.min():.3f}, {y.max():.3f}] "
                  + ("(untrained network: step 4 trains it)" if train else
                     "(untrained network: spdnn demo without --no-train trains it)"))
    console.print(f"  wrote {figure} (output maps of the untrained network)")
    console.print(f"  {info.params:,} parameters, {info.macs / 1e6:.1f} M MACs per image, "
                  f"{dt * 1e3:.1f} ms per image on {torch.get_num_threads()} CPU thread(s)")
    metrics = None
    if train:
        console.rule("4. A short training run of the merged network (spdnn train)")
        metrics, columns = _train(root, outdir, console, samples)
    else:
        columns = ["untrained (random weights)"]
    total = time.perf_counter() - t_start
    console.rule(f"done in {total:.1f} s; everything is in {outdir}")
    return {"outdir": outdir, "output_shape": tuple(y.shape), "latency_s": dt, "files": written,
            "params": info.params, "total_s": total, "metrics": metrics, "figure": figure,
            "figure_columns": columns}


def _train(root: Path, outdir: Path, console: Console,
           samples: list[tuple[str, np.ndarray, np.ndarray | None]]) -> tuple[dict, list[str]]:
    """Train the merged iris network briefly on synthetic degraded eyes; print its metrics and
    redraw ``merged_output.png`` with the network's output before and after training.
    Returns the metrics and the figure's output column labels."""
    from rich.table import Table

    from spdnn.runs import trainer_for
    from spdnn.train import load_recipe

    recipe = load_recipe(root / "recipes/iris_a_merged.yaml", DEMO_TRAIN)
    console.print(f"  recipe recipes/iris_a_merged.yaml with {' '.join('--set ' + o for o in DEMO_TRAIN)}")
    console.print("  (the full comparison: spdnn compare recipes/iris_a_*.yaml)")
    trainer = trainer_for(recipe, outdir=outdir / "train", console=console)
    images = [s[1] for s in samples]
    before = _maps(trainer.models["net"], images)  # uses no random numbers: training is unchanged
    t0 = time.perf_counter()
    metrics = trainer.run()
    after = _maps(trainer.eval_models()["net"], images)
    table = Table(title=f"validation after {plural(trainer.step, 'step')} ({time.perf_counter() - t0:.0f} s; "
                        "threshold 0.45)", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in metrics.items():
        table.add_row(k.removeprefix("val_"), f"{v:.4f}")
    console.print(table)
    console.print(f"  run folder {outdir / 'train'}: samples.png, plots/, metrics.csv, last.pt")
    columns = ["untrained (random weights)", f"after {plural(trainer.step, 'training step')}"]
    fig = output_figure(outdir / "merged_output.png", samples,
                        list(zip(columns, [before, after])),
                        f"merged network output before and after {plural(trainer.step, 'step')} "
                        f"(validation MCC {metrics.get('val_mcc', float('nan')):.3f})")
    console.print(f"  wrote {fig} (output maps before and after training)")
    return metrics, columns


def demo(
    output: Annotated[Path, typer.Option("-o", "--output", help="Output folder.")] = Path("out/demo"),
    root: Annotated[Path | None, typer.Option(
        help="Folder holding netspecs/ and recipes/ (default: the current folder when it has "
             "netspecs/iris/appendix_a, else the zoo shipped with spdnn).")] = None,
    train: Annotated[bool, typer.Option(help="Also train the merged network briefly (~1 min).")] = True,
) -> None:
    """Merge the thesis' three iris parents, render, compile and run the merged network.

    Writes the merged netspec, the merge report, SVG diagrams, the emitted PyTorch module and
    its output on a real grayscale photograph into the output folder, then trains the merged
    network for 200 steps on synthetic degraded eyes and prints its segmentation metrics.
    """
    from spdnn import zoo
    from spdnn.extras import require

    require("train", "spdnn demo")  # scikit-image's photograph, matplotlib's figure, training
    if root is None:
        root = Path(".") if Path(IRIS_A).is_dir() else zoo.root()
    if not (root / IRIS_A).is_dir():
        raise SpdnnError(f"{root / IRIS_A} not found",
                         hint="pass --root a folder holding netspecs/ and recipes/, or leave it "
                              "out to use the ones shipped with spdnn (spdnn zoo)")
    run_demo(output, root, out, train=train)


def register(app: typer.Typer) -> None:
    """Add the ``demo`` command to the application."""
    app.command()(demo)
