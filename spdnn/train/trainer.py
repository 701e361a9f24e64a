"""The shared trainer: the one place training happens.

Features: device selection (CUDA when present), mixed precision on CUDA, deterministic seeds,
gradient clipping, EMA of weights (``torch.optim.swa_utils``), atomic checkpoints (temporary file
+ rename) every N steps and at the end, exact resume (model, optimizer, scheduler, EMA, scaler,
RNG states and the position inside the epoch are restored, so an interrupted and resumed run
ends with the same weights as an uninterrupted one), best-checkpoint tracking, progress bars,
a metrics CSV, PNG plots, a metrics JSON and sample prediction grids, and
DistributedDataParallel under ``torchrun`` (gloo on CPU, nccl on CUDA).
"""

from __future__ import annotations

import contextlib
import functools
import csv
import io
import json
import math
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from spdnn import spec as S
from spdnn.codegen import build_module
from spdnn.errors import SpdnnError
from spdnn.spec.yaml_io import dump_yaml
from spdnn.train.recipe import Recipe
from spdnn.train.task import Task, get_task, unpack

CHECKPOINT = "last.pt"
BEST = "best.pt"


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def save_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    st = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict) -> None:
    random.setstate(st["python"])
    np.random.set_state(st["numpy"])
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def netspec_of(recipe: Recipe) -> S.Netspec:
    """The recipe's network: a netspec file, or the SPDNN merge of several.

    Raises:
        SpdnnError: missing files, invalid netspecs, merge errors.
    """
    m = recipe.model
    if m.netspec is not None:
        paths = recipe.resolve(m.netspec)
        if len(paths) != 1:
            raise SpdnnError(f"model.netspec '{m.netspec}' matches {len(paths)} files", field="model.netspec")
        return S.load(paths[0])
    from spdnn.graph import merge, parse_params

    paths = [p for pat in m.merge or [] for p in recipe.resolve(pat)]
    return merge([S.load(p) for p in paths], params=parse_params(m.params), distance=m.distance,
                 head_kernel=m.head_kernel, name=recipe.name).spec


def _private_generator() -> torch.Generator:
    """A generator for DataLoaders: creating an iterator draws a seed from it, and drawing it from
    the global RNG instead would shift dropout masks after a resume."""
    return torch.Generator().manual_seed(0)


def _init_worker(seed: int, step: int, worker_id: int) -> None:
    seed_everything(int(np.random.SeedSequence([seed, step, worker_id]).generate_state(1)[0]))


def _seed_worker(seed: int, step: int):
    """``worker_init_fn`` of the training DataLoader: worker ``i`` of the loader created at
    ``step`` seeds Python, NumPy and torch from ``(seed, step, i)``, so a resumed run (which
    recreates the loader at the same step) gives every worker the same random streams.
    A ``functools.partial`` of a module-level function, so it pickles under any start method."""
    return functools.partial(_init_worker, seed, step)


def _lr_lambda(recipe: Recipe, total: int):
    sch = recipe.schedule

    def f(step: int) -> float:
        if sch.warmup_steps and step < sch.warmup_steps:
            return (step + 1) / sch.warmup_steps
        t = (step - sch.warmup_steps) / max(1, total - sch.warmup_steps)
        if sch.name == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
        if sch.name == "linear":
            return max(0.0, 1 - t)
        if sch.name == "step":
            return sch.gamma ** (step // sch.step_size)
        return 1.0

    return f


# --------------------------------------------------------------------------------------------
# the trainer
# --------------------------------------------------------------------------------------------
class Trainer:
    """Train a recipe's task.

    Args:
        recipe: the validated recipe.
        outdir: run folder (default ``recipe.output_dir()``).
        resume: continue from ``outdir/last.pt`` if present.
        console: where progress goes (rank 0 only).
        stop_after: stop (with a checkpoint) after this many total steps, as if interrupted;
            used to test exact resumption.
        progress: show a progress bar.
        netspec: the network to train instead of the recipe's ``model`` (used when a checkpoint
            is evaluated: the network comes from the checkpoint itself).
    """

    def __init__(self, recipe: Recipe, outdir: Path | None = None, resume: bool = False,
                 console: Console | None = None, stop_after: int | None = None,
                 progress: bool = True, netspec: S.Netspec | None = None) -> None:
        self.recipe = recipe
        self.outdir = Path(outdir) if outdir is not None else recipe.output_dir()
        self.resume = resume
        self.stop_after = stop_after
        self.show_progress = progress
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.console = console or Console(stderr=True)
        if recipe.device == "cuda" and not torch.cuda.is_available():
            raise SpdnnError("device 'cuda' requested but no CUDA device is available",
                             field="device", hint="use device: auto or cpu")
        use_cuda = recipe.device == "cuda" or (recipe.device == "auto" and torch.cuda.is_available())
        if self.world > 1:
            if not dist.is_initialized():
                dist.init_process_group("nccl" if use_cuda else "gloo")
            local = int(os.environ.get("LOCAL_RANK", "0"))
            self.device = torch.device(f"cuda:{local}") if use_cuda else torch.device("cpu")
            if use_cuda:
                torch.cuda.set_device(self.device)
        else:
            self.device = torch.device("cuda" if use_cuda else "cpu")
        self.amp = bool(recipe.amp and self.device.type == "cuda")
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)

        seed_everything(recipe.seed)
        self.task: Task = get_task(recipe.task)(recipe)
        self.netspec = netspec if netspec is not None else netspec_of(recipe)
        torch.manual_seed(recipe.seed)
        net = build_module(self.netspec)
        self.memory_format = (torch.channels_last if recipe.channels_last
                              and len(self.netspec.inputs[0].shape) == 3 else torch.contiguous_format)
        self.models: dict[str, nn.Module] = {
            k: m.to(self.device, memory_format=self.memory_format)
            for k, m in self.task.build_models(net).items()}
        self.train_models = self.models
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.train_models = {k: DDP(m, device_ids=[self.device.index] if use_cuda else None)
                                 for k, m in self.models.items()}
        self.optimizers = self.task.configure_optimizers(self.models)
        self.train_ds, self.val_ds = self.task.datasets()
        self.sampler = DistributedSampler(self.train_ds, num_replicas=self.world, rank=self.rank,
                                          shuffle=True, seed=recipe.seed, drop_last=True)
        self.steps_per_epoch = max(1, len(self.sampler) // recipe.batch_size)
        self.total_steps = recipe.steps or recipe.epochs * self.steps_per_epoch
        self.schedulers = {k: torch.optim.lr_scheduler.LambdaLR(o, _lr_lambda(recipe, self.total_steps))
                           for k, o in self.optimizers.items()}
        self.ema = None
        if recipe.ema:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.ema = {k: AveragedModel(m, multi_avg_fn=get_ema_multi_avg_fn(recipe.ema),
                                         use_buffers=True) for k, m in self.models.items()}
        self.step = 0
        self.history: list[dict] = []
        self.best: float | None = None
        self.best_metric = recipe.best_metric or self.task.default_best_metric
        self.best_mode = recipe.best_mode if recipe.best_metric else self.task.default_best_mode

    # -- used by tasks ------------------------------------------------------------------------
    def to_device(self, t: torch.Tensor) -> torch.Tensor:
        """Move a batch tensor to the device (channels-last for images, ~1.6x faster convs on CPU)."""
        t = t.to(self.device, non_blocking=True)
        return t.contiguous(memory_format=self.memory_format) if t.dim() == 4 else t

    def autocast(self):
        """Mixed precision context on CUDA (float16), a no-op on CPU."""
        if self.amp:
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def backward_step(self, loss: torch.Tensor, name: str) -> None:
        """Backward, optional gradient clipping, optimizer step for the model ``name``."""
        opt = self.optimizers[name]
        opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.recipe.grad_clip:
            self.scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(self.models[name].parameters(), self.recipe.grad_clip)
        self.scaler.step(opt)
        self.scaler.update()

    # -- checkpoints ----------------------------------------------------------------------------
    def state(self) -> dict:
        return {
            "step": self.step,
            "models": {k: m.state_dict() for k, m in self.models.items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "ema": {k: e.state_dict() for k, e in (self.ema or {}).items()},
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(),
            "history": self.history,
            "best": self.best,
            "recipe": self.recipe.model_dump(mode="json"),
            "netspec": S.dump(self.netspec),
            "spdnn_checkpoint": 1,
        }

    def load_state(self, st: dict) -> None:
        self.step = st["step"]
        for k, m in self.models.items():
            m.load_state_dict(st["models"][k])
        for k, o in self.optimizers.items():
            o.load_state_dict(st["optimizers"][k])
        for k, s in self.schedulers.items():
            s.load_state_dict(st["schedulers"][k])
        for k, e in (self.ema or {}).items():
            e.load_state_dict(st["ema"][k])
        self.scaler.load_state_dict(st["scaler"])
        self.history = st["history"]
        self.best = st["best"]
        set_rng_state(st["rng"])

    def save_checkpoint(self, name: str = CHECKPOINT) -> None:
        if self.rank == 0:
            save_atomic(self.state(), self.outdir / name)

    # -- evaluation -----------------------------------------------------------------------------
    def eval_models(self) -> dict[str, nn.Module]:
        """The models used for evaluation: the EMA weights when EMA is on."""
        if self.ema:
            return {k: e.module for k, e in self.ema.items()}
        return self.models

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        models = self.eval_models()
        for m in models.values():
            m.eval()
        metrics = self.task.new_metrics()
        loader = DataLoader(self.val_ds, batch_size=self.recipe.batch_size, shuffle=False,
                            generator=_private_generator())
        total, n = 0.0, 0
        for batch in loader:
            x, y, mask = (self.to_device(t) if t is not None else None for t in unpack(batch))
            pred = self.task.predict(models, x).float()
            total += float(self.task.loss(pred, y, mask)) * x.shape[0]
            n += x.shape[0]
            if metrics is not None:
                metrics.update(pred, y, mask)
        for m in self.models.values():
            m.train()
        out = {"val_loss": total / max(1, n)}
        if metrics is not None:
            out.update({f"val_{k}": v for k, v in metrics.compute().items()})
        return out

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> dict[str, float]:
        """Train to the end (or ``stop_after``); returns the last evaluation."""
        r = self.recipe
        ckpt = self.outdir / CHECKPOINT
        if self.resume and ckpt.exists():
            self.load_state(torch.load(ckpt, map_location=self.device, weights_only=False))
            if self.rank == 0:
                self.console.print(f"resumed from {ckpt} at step {self.step}")
        elif self.rank == 0:
            self.outdir.mkdir(parents=True, exist_ok=True)
            write_text_atomic(self.outdir / "netspec.yaml", S.dump(self.netspec))
            write_text_atomic(self.outdir / "recipe.yaml", dump_yaml(r.model_dump(mode="json")))
        for m in self.models.values():
            m.train()
        last_eval: dict[str, float] = {}
        t_last, seen = time.perf_counter(), 0
        window: list[dict[str, float]] = []
        progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                            TextColumn("{task.completed}/{task.total}"),
                            TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                            TimeRemainingColumn(), console=self.console,
                            disable=not self.show_progress or self.rank != 0, transient=False)
        with progress:
            bar = progress.add_task(r.name, total=self.total_steps, completed=self.step, info="")
            while self.step < self.total_steps:
                epoch, done = divmod(self.step, self.steps_per_epoch)
                self.sampler.set_epoch(epoch)
                indices = list(self.sampler)[done * r.batch_size:
                                             self.steps_per_epoch * r.batch_size]
                loader = DataLoader(self.train_ds, batch_size=r.batch_size, sampler=indices,
                                    drop_last=True, generator=_private_generator(),
                                    num_workers=r.data.num_workers,
                                    worker_init_fn=_seed_worker(r.seed, self.step))
                for batch in loader:
                    batch = tuple(self.to_device(t) for t in batch)
                    logs = self.task.training_step(self, batch)
                    for s in self.schedulers.values():
                        s.step()
                    if self.ema:
                        for k, e in self.ema.items():
                            e.update_parameters(self.models[k])
                    self.step += 1
                    seen += batch[0].shape[0] * self.world
                    window.append(logs)
                    if self.step % r.log_every == 0 or self.step == self.total_steps:
                        now = time.perf_counter()
                        row = {"step": self.step, "epoch": epoch,
                               "lr": next(iter(self.optimizers.values())).param_groups[0]["lr"],
                               "samples_per_s": seen / max(1e-9, now - t_last)}
                        for k in window[0]:
                            row[f"train_{k}"] = float(np.mean([w[k] for w in window]))
                        t_last, seen, window = now, 0, []
                        self.history.append(row)
                        progress.update(bar, info=" ".join(
                            f"{k[6:]} {v:.4f}" for k, v in row.items() if k.startswith("train_"))
                            + f" | {row['samples_per_s']:.0f} samples/s")
                    if self.step % r.eval_every == 0 or self.step == self.total_steps:
                        last_eval = self.evaluate()
                        self.history.append({"step": self.step, "epoch": epoch, **last_eval})
                        self._track_best(last_eval)
                        self._write_logs()
                    if self.step % r.checkpoint_every == 0 or self.step == self.total_steps:
                        self.save_checkpoint()
                    progress.update(bar, completed=self.step)
                    if self.stop_after is not None and self.step >= self.stop_after:
                        self.save_checkpoint()
                        return last_eval
                    if self.step >= self.total_steps:
                        break
        if self.rank == 0:
            self._finish(last_eval)
        if self.world > 1 and os.environ.get("SPDNN_DUMP_RANK_WEIGHTS"):
            save_atomic({k: m.state_dict() for k, m in self.models.items()},
                        self.outdir / f"rank{self.rank}_weights.pt")
        return last_eval

    def _track_best(self, ev: dict[str, float]) -> None:
        value = ev.get(self.best_metric)
        if value is None or not math.isfinite(value):
            return
        better = self.best is None or (value < self.best if self.best_mode == "min" else value > self.best)
        if better:
            self.best = value
            self.save_checkpoint(BEST)

    def _write_logs(self) -> None:
        if self.rank != 0:
            return
        keys: list[str] = []
        for row in self.history:
            keys += [k for k in row if k not in keys]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=keys)
        w.writeheader()
        w.writerows(self.history)
        write_text_atomic(self.outdir / "metrics.csv", buf.getvalue())

    def _finish(self, last_eval: dict[str, float]) -> None:
        self._write_logs()
        summary = {"recipe": self.recipe.name, "steps": self.step, "final": last_eval,
                   "best": {self.best_metric: self.best},
                   "params": sum(p.numel() for p in next(iter(self.models.values())).parameters())}
        write_text_atomic(self.outdir / "metrics.json", json.dumps(summary, indent=2))
        plot_history(self.history, self.outdir / "plots")
        val_batch = next(iter(DataLoader(self.val_ds, batch_size=max(1, self.recipe.samples),
                                         generator=_private_generator())))
        val_batch = tuple(self.to_device(t) for t in val_batch)
        models = self.eval_models()
        for m in models.values():
            m.eval()
        self.task.figures(models, val_batch, self.outdir)


def plot_history(history: list[dict], outdir: Path) -> list[Path]:
    """Loss curves (train and validation) and validation metric curves as PNG files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    train = [r for r in history if any(k.startswith("train_") for k in r)]
    val = [r for r in history if "val_loss" in r]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key in sorted({k for r in train for k in r if k.startswith("train_")}):
        ax.plot([r["step"] for r in train], [r[key] for r in train], label=key)
    if val:
        ax.plot([r["step"] for r in val], [r["val_loss"] for r in val], "o-", label="val_loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(outdir / "loss.png", dpi=100)
    plt.close(fig)
    written.append(outdir / "loss.png")
    metric_keys = sorted({k for r in val for k in r if k.startswith("val_") and k != "val_loss"})
    if metric_keys:
        cols = min(4, len(metric_keys))
        rows = math.ceil(len(metric_keys) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 2.4 * rows), squeeze=False)
        for ax, key in zip(axes.flat, metric_keys):
            ax.plot([r["step"] for r in val], [r[key] for r in val], "o-")
            ax.set_title(key[4:], fontsize=9)
            ax.grid(alpha=0.3)
        for ax in list(axes.flat)[len(metric_keys):]:
            ax.axis("off")
        fig.tight_layout()
        fig.savefig(outdir / "metrics.png", dpi=100)
        plt.close(fig)
        written.append(outdir / "metrics.png")
    return written
