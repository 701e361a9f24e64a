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
import csv
import functools
import io
import json
import math
import os
import signal
import time
from dataclasses import dataclass
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
from spdnn.io import (
    BEST,
    LAST,
    CheckpointError,
    load_checkpoint,
    remove_stale_temps,
    save_checkpoint,
    save_torch_atomic,
    write_atomic,
)
from spdnn.spec.yaml_io import dump_yaml
from spdnn.train.recipe import ScheduleSpec
from spdnn.train.state import rng_state, seed_everything, set_rng_state
from spdnn.train.task import Task


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


def _lr_lambda(sch: ScheduleSpec, total: int):
    """The learning-rate multiplier of ``torch.optim.lr_scheduler.LambdaLR`` at each step:
    linear warm-up over ``warmup_steps``, then constant, cosine, linear decay to 0, or step."""

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
@dataclass
class TrainingInterrupted(SpdnnError):
    """Training stopped on SIGINT/SIGTERM after a checkpoint was written (``signum`` says which:
    the command line exits with 128 + signum, i.e. 130 for Ctrl-C and 143 for TERM)."""

    signum: int = signal.SIGINT


class Trainer:
    """Train a task (one or several networks) to the end of its recipe.

    Args:
        task: the task, built with its networks (:func:`spdnn.tasks.build_task`; the one-call
            forms are :func:`spdnn.runs.trainer_for` and :func:`spdnn.runs.trainer_from_checkpoint`).
        outdir: run folder (default ``recipe.output_dir()``).
        resume: continue from ``outdir/last.pt`` (``True``: it must exist; ``"auto"``: if it
            exists, else start). Recipe fields that differ from the checkpoint's recipe
            (``--set`` overrides) are applied after the state is restored, and reported.
        console: where progress goes (rank 0 only).
        stop_after: stop (with a checkpoint) after this many total steps, as if interrupted;
            used to test exact resumption.
        progress: show a progress bar.

    Attributes:
        models: ``{name: nn.Module}`` on the device; ``train_models`` the same, DDP-wrapped
            when distributed; ``optimizers``/``schedulers``/``ema``: per model name.

    Raises:
        SpdnnError: CUDA requested but absent, or a task/recipe error.
    """

    def __init__(self, task: Task, outdir: Path | None = None, resume: bool | str = False,
                 console: Console | None = None, stop_after: int | None = None,
                 progress: bool = True) -> None:
        recipe = task.recipe
        self.task = task
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
        self.netspecs = task.netspecs
        images = any(len(s.inputs[0].shape) == 3 for s in self.netspecs.values())
        self.memory_format = (torch.channels_last if recipe.channels_last and images
                              else torch.contiguous_format)
        nets = {}
        for name in task.model_names:  # each model built from the same seed as a lone run
            torch.manual_seed(recipe.seed)
            nets[name] = build_module(task.module_netspec(name))
        self.models: dict[str, nn.Module] = {
            k: m.to(self.device, memory_format=self.memory_format)
            for k, m in task.build_models(nets).items()}
        self.train_models = self.models
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.train_models = {k: DDP(m, device_ids=[self.device.index] if use_cuda else None)
                                 for k, m in self.models.items()}
        self.optimizers = task.configure_optimizers(self.models)
        self.train_ds, self.val_ds = task.datasets()
        self.sampler = DistributedSampler(self.train_ds, num_replicas=self.world, rank=self.rank,
                                          shuffle=True, seed=recipe.seed, drop_last=True)
        self.steps_per_epoch = max(1, len(self.sampler) // recipe.batch_size)
        self.total_steps = recipe.steps or recipe.epochs * self.steps_per_epoch
        self.schedulers = {
            k: torch.optim.lr_scheduler.LambdaLR(o, _lr_lambda(recipe.model_schedule(k),
                                                               self.total_steps))
            for k, o in self.optimizers.items()}
        self.ema: dict[str, nn.Module] = {}
        for k, m in self.models.items():
            decay = recipe.model_ema(k)
            if decay:
                from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

                self.ema[k] = AveragedModel(m, multi_avg_fn=get_ema_multi_avg_fn(decay),
                                            use_buffers=True)
        self.step = 0
        self.history: list[dict] = []
        self.best: float | None = None
        self.best_metric = recipe.best_metric or task.default_best_metric
        self.best_mode = recipe.best_mode if recipe.best_metric else task.default_best_mode
        self._signal: int | None = None

    # -- used by tasks ------------------------------------------------------------------------
    def to_device(self, t: torch.Tensor) -> torch.Tensor:
        """Move a batch tensor to the device (channels-last for images, ~1.6x faster convs on CPU)."""
        t = t.to(self.device, non_blocking=True)
        return t.contiguous(memory_format=self.memory_format) if t.dim() == 4 else t

    def autocast(self):
        """Mixed-precision context on CUDA (float16), a no-op on CPU. Compute losses outside it
        (or on ``.float()`` outputs) where they are not autocast-safe (BCE on probabilities)."""
        if self.amp:
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def backward_step(self, loss: torch.Tensor, name: str) -> None:
        """Update model ``name`` from ``loss``: zero its gradients, backward (scaled under AMP),
        clip its gradient norm (its or the recipe's ``grad_clip``), optimizer step. The scaler's
        ``update()`` runs once per iteration, after :meth:`Task.training_step` (the AMP rule for
        several optimizers), not here."""
        opt = self.optimizers[name]
        opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        clip = self.recipe.model_grad_clip(name)
        if clip:
            self.scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(self.models[name].parameters(), clip)
        self.scaler.step(opt)

    def param_counts(self) -> dict[str, int]:
        """Trainable parameters of each model."""
        return {k: sum(p.numel() for p in m.parameters() if p.requires_grad)
                for k, m in self.models.items()}

    # -- checkpoints ----------------------------------------------------------------------------
    def state(self) -> dict:
        """Everything exact resume needs, as tensors and plain containers only (so it loads
        with ``torch.load(weights_only=True)``)."""
        return {
            "step": self.step,
            "models": {k: m.state_dict() for k, m in self.models.items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "ema": {k: e.state_dict() for k, e in self.ema.items()},
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(),
            "history": self.history,
            "best": self.best,
            "task": self.task.state_dict(),
            "recipe": self.recipe.model_dump(mode="json"),
            "netspecs": {k: S.dump(v) for k, v in self.netspecs.items()},
        }

    def load_state(self, st: dict) -> None:
        """Restore :meth:`state` (models, optimizers, schedulers, EMA, scaler, RNG, logs)."""
        try:
            for k, m in self.models.items():
                m.load_state_dict(st["models"][k])
            for k, o in self.optimizers.items():
                o.load_state_dict(st["optimizers"][k])
            for k, s in self.schedulers.items():
                s.load_state_dict(st["schedulers"][k])
            for k, e in self.ema.items():
                e.load_state_dict(st["ema"][k])
            self.scaler.load_state_dict(st["scaler"])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise CheckpointError(
                f"the checkpoint does not fit the recipe's networks ({type(exc).__name__}: "
                f"{' '.join(str(exc).split())[:200]})", file=st.get("path"),
                hint="resume with the recipe and netspecs the run was started with") from None
        self.step = st["step"]
        self.history = st["history"]
        self.best = st["best"]
        self.task.load_state_dict(st.get("task", {}))
        set_rng_state(st["rng"])

    def _apply_recipe_changes(self, stored: dict) -> list[str]:
        """After a resume: apply the fields of the current recipe (``--set`` overrides) that
        differ from the checkpoint's recipe. Restoring the optimizer and scheduler states would
        otherwise silently keep the old learning rate, momentum, betas and weight decay.
        Returns the changes as ``field: old -> new`` strings."""
        now = self.recipe.model_dump(mode="json")
        changes = [f"{k}: {a!r} -> {b!r}" for k, a, b in _diff(stored, now)]
        if not changes:
            return []
        for k, opt in self.optimizers.items():
            o = self.recipe.model_optim(k)
            sched = self.schedulers[k]
            factor = sched.lr_lambdas[0](sched.last_epoch)
            sched.base_lrs = [o.lr for _ in opt.param_groups]
            for g in opt.param_groups:
                g["initial_lr"] = o.lr
                g["lr"] = o.lr * factor
                g["weight_decay"] = o.weight_decay
                if "momentum" in g:
                    g["momentum"] = o.momentum
                    g["nesterov"] = o.nesterov and o.momentum > 0
                if "betas" in g:
                    g["betas"] = tuple(o.betas)
        return changes

    def save_checkpoint(self, name: str = LAST) -> None:
        """Write the state to ``outdir/name`` atomically (rank 0 only)."""
        if self.rank == 0:
            save_checkpoint(self.state(), self.outdir / name)

    # -- evaluation -----------------------------------------------------------------------------
    def eval_models(self) -> dict[str, nn.Module]:
        """The models used for evaluation: the EMA weights of the models that have EMA."""
        return {k: (self.ema[k].module if k in self.ema else m) for k, m in self.models.items()}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """One pass over the validation set: ``val_<value>`` of :meth:`Task.validation_step`
        (averaged, weighted by batch size) and ``val_<metric>`` of :meth:`Task.new_metrics`."""
        models = self.eval_models()
        for m in models.values():
            m.eval()
        metrics = self.task.new_metrics()
        loader = DataLoader(self.val_ds, batch_size=self.recipe.batch_size, shuffle=False,
                            generator=_private_generator())
        totals: dict[str, float] = {}
        n = 0
        for batch in loader:
            batch = tuple(self.to_device(t) for t in batch)
            bs = batch[0].shape[0]
            for k, v in self.task.validation_step(models, batch, metrics).items():
                totals[k] = totals.get(k, 0.0) + float(v) * bs
            n += bs
        for m in self.models.values():
            m.train()
        out = {f"val_{k}": v / max(1, n) for k, v in totals.items()}
        if metrics is not None:
            out.update({f"val_{k}": v for k, v in metrics.compute().items()})
        return out

    # -- the loop -------------------------------------------------------------------------------
    def _on_signal(self, signum, frame) -> None:
        if self._signal is not None:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self._signal = signum
        if self.rank == 0:
            self.console.print(f"\n{signal.Signals(signum).name}: finishing this step, then "
                               "saving a checkpoint (press Ctrl-C again to abandon it)")

    @contextlib.contextmanager
    def _signals(self):
        """SIGINT/SIGTERM set a flag that the loop checks after each step (main thread only)."""
        import threading

        if threading.current_thread() is not threading.main_thread():
            yield
            return
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    def run(self) -> dict[str, float]:
        """Train to the end (or ``stop_after``); returns the last evaluation.

        Raises:
            CheckpointError: ``resume`` without a readable ``last.pt``.
            TrainingInterrupted: SIGINT/SIGTERM arrived; ``last.pt`` was written first.
        """
        r = self.recipe
        ckpt = self.outdir / LAST
        if self.resume == "auto":
            self.resume = ckpt.is_file()
        if self.resume:
            st = load_checkpoint(ckpt, map_location=self.device, prefer=LAST)
            self.load_state(st)
            changes = self._apply_recipe_changes(st["recipe"])
            if self.rank == 0:
                self.console.print(f"resumed from {ckpt} at step {self.step}")
                if changes:
                    self.console.print("recipe changes applied: " + "; ".join(changes))
                    note = (f"# resumed at step {self.step} with changes: {'; '.join(changes)}\n")
                    write_atomic(self.outdir / "recipe.yaml",
                                 note + dump_yaml(r.model_dump(mode="json")))
        elif self.rank == 0:
            self.outdir.mkdir(parents=True, exist_ok=True)
            for name, spec in self.netspecs.items():
                fname = "netspec.yaml" if list(self.netspecs) == ["net"] else f"netspec_{name}.yaml"
                write_atomic(self.outdir / fname, S.dump(spec))
            write_atomic(self.outdir / "recipe.yaml", dump_yaml(r.model_dump(mode="json")))
        if self.rank == 0:
            remove_stale_temps(self.outdir)  # what a killed run's atomic writes left behind
        for m in self.models.values():
            m.train()
        with self._signals():
            last_eval = self._loop()
        if self._signal is not None:
            self.save_checkpoint()
            self._write_logs()
            raise TrainingInterrupted(
                f"stopped by {signal.Signals(self._signal).name} at step {self.step}; checkpoint "
                "written", file=str(ckpt), signum=self._signal,
                hint=f"continue with: spdnn train RECIPE -o {self.outdir} --resume")
        if self.stop_after is not None and self.step < self.total_steps:
            return last_eval
        if self.rank == 0:
            self._finish(last_eval)
        if self.world > 1 and os.environ.get("SPDNN_DUMP_RANK_WEIGHTS"):
            save_torch_atomic({k: m.state_dict() for k, m in self.models.items()},
                              self.outdir / f"rank{self.rank}_weights.pt")
        return last_eval

    def _loop(self) -> dict[str, float]:
        r = self.recipe
        last_eval: dict[str, float] = {}
        t_last, seen = time.perf_counter(), 0
        window: list[dict[str, float]] = []
        progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                            TextColumn("{task.completed}/{task.total}"),
                            TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                            TimeRemainingColumn(), console=self.console,
                            disable=not self.show_progress or self.rank != 0, transient=False)
        lr_keys = ({"net": "lr"} if list(self.optimizers) == ["net"]
                   else {k: f"lr_{k}" for k in self.optimizers})
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
                    self.scaler.update()  # once per iteration, whatever the number of optimizers
                    for s in self.schedulers.values():
                        s.step()
                    for k, e in self.ema.items():
                        e.update_parameters(self.models[k])
                    self.step += 1
                    seen += batch[0].shape[0] * self.world
                    window.append(logs)
                    if self.step % r.log_every == 0 or self.step == self.total_steps:
                        now = time.perf_counter()
                        row = {"step": self.step, "epoch": epoch}
                        for k, o in self.optimizers.items():
                            row[lr_keys[k]] = o.param_groups[0]["lr"]
                        row["samples_per_s"] = seen / max(1e-9, now - t_last)
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
                    if self._signal is not None:
                        return last_eval
                    if self.stop_after is not None and self.step >= self.stop_after:
                        self.save_checkpoint()
                        return last_eval
                    if self.step >= self.total_steps:
                        break
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
        write_atomic(self.outdir / "metrics.csv", buf.getvalue())

    def _finish(self, last_eval: dict[str, float]) -> None:
        self._write_logs()
        counts = self.param_counts()
        summary = {"recipe": self.recipe.name, "steps": self.step, "final": last_eval,
                   "best": {self.best_metric: self.best},
                   "params": sum(counts.values()), "params_per_model": counts}
        write_atomic(self.outdir / "metrics.json", json.dumps(summary, indent=2))
        plot_history(self.history, self.outdir / "plots")
        val_batch = next(iter(DataLoader(self.val_ds, batch_size=max(1, self.recipe.samples),
                                         generator=_private_generator())))
        val_batch = tuple(self.to_device(t) for t in val_batch)
        models = self.eval_models()
        for m in models.values():
            m.eval()
        self.task.figures(models, val_batch, self.outdir)


def _diff(a: Any, b: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """``(dotted key, old, new)`` for every leaf that differs between two plain dicts."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in list(a) + [k for k in b if k not in a]:
            out += _diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [(prefix.rstrip("."), a, b)]


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
