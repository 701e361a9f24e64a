"""The README demo: merge the thesis' three iris parents (App. A), render, compile, run.

``spdnn demo -o out/demo`` writes into the output folder:

* ``merged.yaml`` and ``merge_report.md``: the SPDNN merge of ``netspecs/iris/appendix_a``;
* ``labels_parent_*.svg``, ``parallel.svg``, ``contracted.svg``, ``side_by_side.svg``: diagrams
  (``.dot`` files instead when Graphviz's ``dot`` program is missing);
* ``merged_net.py``: the standalone PyTorch module, which is then imported and run on a real
  grayscale photograph shipped with scikit-image (``camera``, resized to 96x128), as the
  iris networks take 96x128 grayscale images;
* ``camera_96x128.png`` and ``merged_output.png``: that input and the (untrained) output map.
"""

from __future__ import annotations

import importlib.util
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from spdnn.cli.console import out
from spdnn.errors import SpdnnError
from spdnn.io import write_atomic

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
    _save_png(outdir / "merged_output.png", y[0, 0].numpy())
    info = infer(result.spec)
    console.print(f"  input  {tuple(x.shape)} (skimage camera, 96x128 grayscale)")
    console.print(f"  output {tuple(y.shape)}, values in [{y.min():.3f}, {y.max():.3f}] "
                  "(untrained network: `spdnn train` trains it)")
    console.print(f"  {info.params:,} parameters, {info.macs / 1e6:.1f} M MACs per image, "
                  f"{dt * 1e3:.1f} ms per image on {torch.get_num_threads()} CPU thread(s)")
    metrics = None
    if train:
        console.rule("4. A short training run of the merged network (spdnn train)")
        metrics = _train(root, outdir, console)
    total = time.perf_counter() - t_start
    console.rule(f"done in {total:.1f} s; everything is in {outdir}")
    return {"outdir": outdir, "output_shape": tuple(y.shape), "latency_s": dt, "files": written,
            "params": info.params, "total_s": total, "metrics": metrics}


def _train(root: Path, outdir: Path, console: Console) -> dict:
    """Train the merged iris network briefly on synthetic degraded eyes; print its metrics."""
    from rich.table import Table

    from spdnn.runs import trainer_for
    from spdnn.train import load_recipe

    recipe = load_recipe(root / "recipes/iris_a_merged.yaml", DEMO_TRAIN)
    console.print(f"  recipe recipes/iris_a_merged.yaml with {' '.join('--set ' + o for o in DEMO_TRAIN)}")
    console.print("  (the full comparison: spdnn compare recipes/iris_a_*.yaml)")
    trainer = trainer_for(recipe, outdir=outdir / "train", console=console)
    t0 = time.perf_counter()
    metrics = trainer.run()
    table = Table(title=f"validation after {trainer.step} steps ({time.perf_counter() - t0:.0f} s; "
                        "threshold 0.45)", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in metrics.items():
        table.add_row(k.removeprefix("val_"), f"{v:.4f}")
    console.print(table)
    console.print(f"  run folder {outdir / 'train'}: samples.png, plots/, metrics.csv, last.pt")
    return metrics


def demo(
    output: Annotated[Path, typer.Option("-o", "--output", help="Output folder.")] = Path("out/demo"),
    root: Annotated[Path, typer.Option(help="Repository root holding netspecs/.")] = Path("."),
    train: Annotated[bool, typer.Option(help="Also train the merged network briefly (~1 min).")] = True,
) -> None:
    """Merge the thesis' three iris parents, render, compile and run the merged network.

    Writes the merged netspec, the merge report, SVG diagrams, the emitted PyTorch module and
    its output on a real grayscale photograph into the output folder, then trains the merged
    network for 200 steps on synthetic degraded eyes and prints its segmentation metrics.
    """
    if not (root / IRIS_A).is_dir():
        raise SpdnnError(f"{root / IRIS_A} not found",
                         hint="run from the repository root or pass --root")
    run_demo(output, root, out, train=train)


def register(app: typer.Typer) -> None:
    """Add the ``demo`` command to the application."""
    app.command()(demo)
