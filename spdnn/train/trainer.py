"""The shared trainer: the one place training happens.

Features: device selection (CUDA when present), mixed precision on CUDA, deterministic seeds,
gradient clipping, EMA of weights (``torch.optim.swa_utils``), atomic checkpoints (temporary file
+ rename) every N steps and at the end, exact resume (model, optimizer, scheduler, EMA, scaler,
RNG states and the position inside the epoch are restored, so an interrupted and resumed run
ends with the same weights as an uninterrupted one), best-checkpoint tracking, progress bars,
a metrics CSV, PNG plots, a metrics JSON and sample prediction grids, optional TensorBoard event
files, and DistributedDataParallel under ``torchrun`` (gloo on CPU, nccl on CUDA).

**What a run prints.** On a terminal: a progress bar. When the console is not a terminal (nohup,
a batch scheduler, CI, a pipe), a bar only shows its last state, so the trainer prints a plain
line every :func:`line_interval` steps instead (step/total, the training losses averaged since
the previous line, learning rate, samples/s, elapsed time and ETA) and one line per validation
(the validation loss and the best-checkpoint metric). ``quiet=True`` prints neither (nor the
resume notices).

**History.** ``Trainer.history`` (checkpointed, written to ``metrics.csv``) holds one row per
``log_every`` steps (``step, epoch, lr, samples_per_s, train_*``), one per validation
(``step, epoch, val_*``) and one per resume: ``{"step": s, "resumed": True}`` (with
``"changes": "optim.lr: 0.01 -> 0.001"`` when ``--set`` changed the recipe). The resume rows are
kept in the CSV (a ``resumed`` column, empty elsewhere, as every row leaves the other kind's
columns empty) and drawn as vertical markers by :func:`plot_history`.
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
from collections.abc import Iterator
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
    check_outputs,
    load_checkpoint,
    remove_stale_temps,
    save_checkpoint,
    save_figure,
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


def line_interval(log_every: int, total_steps: int, most: int = 50) -> int:
    """Steps between two plain log lines when the console is not a terminal.

    The rule: the recipe's ``log_every`` times the smallest integer ``k`` that keeps the run at
    most ``most`` (50) lines, ``log_every * ceil(total_steps / (most * log_every))``. A run of
    more than ``most * log_every`` steps thus prints between ``most / 2`` and ``most`` lines
    (25-50); a shorter one prints every ``log_every`` steps. The last step always prints.
    E.g. ``log_every=10``: 300 steps -> every 10 (30 lines), 2,000 -> every 40 (50 lines),
    100,000 -> every 2,000 (50 lines).
    """
    return log_every * max(1, math.ceil(total_steps / (most * log_every)))


def _hms(seconds: float) -> str:
    """``H:MM:SS`` of a duration (``-:--:--`` when unknown)."""
    if not math.isfinite(seconds) or seconds < 0:
        return "-:--:--"
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def _num(v: float) -> str:
    """A logged value: 4 decimals (``0.0000``), scientific notation when tiny or huge."""
    return f"{v:.4f}" if v == 0 or 1e-3 <= abs(v) < 1e5 else f"{v:.3e}"


def summary_writer_class():
    """``torch.utils.tensorboard.SummaryWriter``.

    Raises:
        SpdnnError: the ``tensorboard`` package (which ``torch.utils.tensorboard`` imports) is
            not installed.
    """
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise SpdnnError("TensorBoard logging needs the 'tensorboard' package, which is not "
                         "installed", field="tensorboard",
                         hint="pip install tensorboard, or train without --tensorboard") from None
    return SummaryWriter


def _tb_tag(key: str) -> str:
    """TensorBoard tag of a history column: ``train_loss`` -> ``train/loss``, ``val_mcc`` ->
    ``val/mcc``, ``lr_generator`` -> ``lr/generator``, ``samples_per_s`` -> ``speed/...``."""
    for prefix in ("train_", "val_", "lr_"):
        if key.startswith(prefix):
            return f"{prefix[:-1]}/{key[len(prefix):]}"
    return "speed/samples_per_s" if key == "samples_per_s" else key


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


class _ForcedStop(BaseException):
    """A second SIGINT/SIGTERM, or the grace period after the first ran out: leave the loop now
    (a ``BaseException``, so that no task's ``except Exception`` swallows it)."""


RUN_FILES = (LAST, BEST, "metrics.csv")
"""The files that make a folder a run: a fresh run into a folder holding one of them needs
``overwrite`` (or ``resume``)."""


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
        progress: show progress: a bar on a terminal, plain lines otherwise (see the module
            docstring).
        quiet: print nothing while training (no progress, no resume notices); errors still
            raise.
        tensorboard: also write TensorBoard event files to ``outdir/tensorboard/`` (every
            history value, tagged ``train/*``, ``val/*``, ``lr``, ``speed/samples_per_s``).
        log_lines: ``None`` (default): plain lines exactly when ``console`` is not a terminal;
            ``True``/``False`` force them on or off (instead of the bar).
        line_every: steps between plain lines (default :func:`line_interval`; lines come
            with the ``log_every`` history rows, so give a multiple of ``log_every``).
        overwrite: a fresh run (``resume=False``) into a folder that holds a run (a file of
            :data:`RUN_FILES`) moves that folder aside to ``<folder>.old-<date>-<time>`` first
            (nothing is deleted); without it such a run is refused. ``resume="auto"`` never
            refuses (it continues the run, or starts one where there is no ``last.pt``).

    A run folder may not hold the recipe, its ``base`` files, its netspecs or their imports.
    SIGINT/SIGTERM finish the current step and write ``last.pt``; a second signal, or the
    first after :attr:`signal_grace_s` seconds, stops at once (``last.pt`` is written unless
    the stop fell inside a step, whose state would be half updated: the last checkpoint stays).

    Attributes:
        models: ``{name: nn.Module}`` on the device; ``train_models`` the same, DDP-wrapped
            when distributed; ``optimizers``/``schedulers``/``ema``: per model name.

    Raises:
        SpdnnError: CUDA requested but absent, ``tensorboard`` without the package, the
            ``train`` extra (matplotlib, scikit-image, ...) not installed, or a task/recipe
            error.
    """

    signal_grace_s: float = 5.0
    """Seconds between the first SIGINT/SIGTERM and a forced stop (see the class docstring)."""

    def __init__(self, task: Task, outdir: Path | None = None, resume: bool | str = False,
                 console: Console | None = None, stop_after: int | None = None,
                 progress: bool = True, quiet: bool = False, tensorboard: bool = False,
                 log_lines: bool | None = None, line_every: int | None = None,
                 overwrite: bool = False) -> None:
        from spdnn.extras import require

        require("train", "spdnn's trainer")
        recipe = task.recipe
        self.task = task
        self.recipe = recipe
        self.outdir = Path(outdir) if outdir is not None else recipe.output_dir()
        self.resume = resume
        self.overwrite = overwrite
        if overwrite and resume is True:
            raise SpdnnError("--resume and --overwrite exclude each other",
                             hint="--resume continues the run; --overwrite starts it again")
        self.stop_after = stop_after
        self.show_progress = progress and not quiet
        self.quiet = quiet
        self.tensorboard = tensorboard
        self.log_lines = log_lines
        self._tb = None
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
        if len(self.sampler) < recipe.batch_size:  # drop_last would leave no batch at all
            each = " per process" if self.world > 1 else ""
            raise SpdnnError(f"the training set has {len(self.sampler)} samples{each}, fewer than "
                             f"one batch of {recipe.batch_size}: training could never take a step",
                             file=(recipe.source_files or [None])[0], field="batch_size",
                             hint="lower batch_size or give more training "
                             "data (e.g. --set data.train_size=...)")
        self.steps_per_epoch = len(self.sampler) // recipe.batch_size
        self.total_steps = recipe.steps or recipe.epochs * self.steps_per_epoch
        self.line_every = line_every or line_interval(recipe.log_every, self.total_steps)
        if tensorboard:
            summary_writer_class()  # a missing package is an error before any training
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
        self._in_step = False

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
        several optimizers), not here.

        Raises:
            SpdnnError: the loss is NaN or infinite (the training diverged): training stops
                at this step, naming it, instead of failing later in a metric or a loss that
                needs finite inputs; nothing of this step is saved.
        """
        if not bool(torch.isfinite(loss.detach()).all()):
            raise self._diverged(name, f"its training loss is "
                                       f"{float(loss.detach().float().sum())}")
        opt = self.optimizers[name]
        opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        clip = self.recipe.model_grad_clip(name)
        if clip:
            self.scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(self.models[name].parameters(), clip)
        self.scaler.step(opt)

    def _diverged(self, name: str, what: str, validation: bool = False) -> SpdnnError:
        """The one-line error that stops a diverged training at the step under way (or in
        the validation after the last step)."""
        lr = self.recipe.model_optim(name.removesuffix(" (EMA)")).lr
        when = (f"in the validation after step {self.step}" if validation else
                f"at step {self.step + 1}")
        return SpdnnError(f"the training diverged {when}: {what} (model "
                          f"'{name}'); training stopped", field="optim.lr",
                          hint=f"lower the learning rate (now {lr:g}), set grad_clip, or check "
                               "the data")

    @contextlib.contextmanager
    def _outputs_kept(self) -> Iterator[None]:
        """While training: keep a reference to each model's latest output (a forward hook,
        no copy, no synchronisation), for :meth:`non_finite` to look at when a step fails."""
        self._outputs: dict[str, Any] = {}

        def keep(name: str):
            return lambda module, args, out: self._outputs.__setitem__(name, out)

        hooks = [m.register_forward_hook(keep(k)) for k, m in self.models.items()]
        hooks += [e.module.register_forward_hook(keep(f"{k} (EMA)")) for k, e in self.ema.items()]
        try:
            yield
        finally:
            for h in hooks:
                h.remove()
            self._outputs = {}

    @contextlib.contextmanager
    def _divergence_named(self, validation: bool = False) -> Iterator[None]:
        """Around a training or validation step: a ``RuntimeError`` or ``ValueError`` raised
        while a network holds non-finite weights or outputs (BCE refuses NaN probabilities)
        becomes :meth:`_diverged`'s one line naming the step."""
        try:
            yield
        except (RuntimeError, ValueError):
            bad = self.non_finite()
            if bad is None:
                raise
            raise self._diverged(bad[0], f"{bad[1]}, so the loss cannot be computed",
                                 validation) from None

    def non_finite(self) -> tuple[str, str] | None:
        """``(model, what)`` for the first model (or its EMA) whose parameters, or whose
        latest output in training or validation, hold NaN or an infinity (``what``: ``"the
        weight c1.weight holds nan"``, ``"its output holds nan"``); ``None`` when all are
        finite."""
        def first_bad(t: torch.Tensor) -> float | None:
            bad = ~torch.isfinite(t.detach())
            return float(t.detach()[bad].flatten()[0]) if bool(bad.any()) else None

        models = [*self.models.items(), *((f"{k} (EMA)", e.module) for k, e in self.ema.items())]
        for k, m in models:
            for pname, p in m.named_parameters():
                if (v := first_bad(p)) is not None:
                    return k, f"the weight {pname} holds {v}"
        for k, out in getattr(self, "_outputs", {}).items():
            outs = out.values() if isinstance(out, dict) else (
                out if isinstance(out, (list, tuple)) else [out])
            for t in outs:
                if isinstance(t, torch.Tensor) and t.is_floating_point() and (
                        v := first_bad(t)) is not None:
                    return k, f"its output holds {v}"
        return None

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
        if self._signal is not None:  # a second signal: stop now
            raise _ForcedStop
        self._signal = signum
        signal.setitimer(signal.ITIMER_REAL, self.signal_grace_s)
        if self.rank == 0 and not self.quiet:
            self.console.print(f"\n{signal.Signals(signum).name}: finishing this step, then "
                               f"saving a checkpoint (stopping anyway in "
                               f"{self.signal_grace_s:g} s or on a second signal)")

    def _on_alarm(self, signum, frame) -> None:
        if self._signal is not None:  # the grace period after the first signal is over
            raise _ForcedStop

    @contextlib.contextmanager
    def _signals(self):
        """SIGINT/SIGTERM set a flag that the loop checks after each step, and start the grace
        period (SIGALRM) that ends in a forced stop (main thread only)."""
        import threading

        if threading.current_thread() is not threading.main_thread():
            yield
            return
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        old[signal.SIGALRM] = signal.signal(signal.SIGALRM, self._on_alarm)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            for s, h in old.items():
                signal.signal(s, h)

    def _prepare_run_folder(self) -> None:
        """Refuse a run folder that holds an input (:func:`spdnn.io.check_outputs`), and a fresh
        run into an existing run unless ``overwrite`` (which moves the old run aside)."""
        import datetime

        check_outputs(self.recipe.input_files(), [], folders=[self.outdir])
        if self.resume or self.rank != 0:
            return
        found = [n for n in RUN_FILES if (self.outdir / n).exists()]
        if not found:
            return
        real = self.outdir.resolve()
        if real in (Path.cwd().resolve(), *Path.cwd().resolve().parents):
            raise SpdnnError(f"the current folder already holds a run ({', '.join(found)}); "
                             "nothing was written", file=str(self.outdir),
                             hint="give a run folder of its own with -o, or --resume")
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        aside, k = real.with_name(f"{real.name}.old-{stamp}"), 1
        while aside.exists():
            k += 1
            aside = real.with_name(f"{real.name}.old-{stamp}-{k}")
        if not self.overwrite:
            raise SpdnnError(f"the run folder already holds a run ({', '.join(found)}); "
                             "nothing was written", file=str(self.outdir),
                             hint="continue it with --resume, start it again with --overwrite "
                             f"(the old run is moved to {aside.name}), or choose another -o")
        try:
            self.outdir.rename(aside)
        except OSError as exc:
            raise SpdnnError(f"cannot move the old run aside: {exc.strerror or exc}",
                             file=str(self.outdir), hint="move or remove it yourself") from None
        self.console.print(f"moved the old run {self.outdir} to {aside}")  # even when quiet

    def run(self) -> dict[str, float]:
        """Train to the end (or ``stop_after``); returns the last evaluation.

        Raises:
            CheckpointError: ``resume`` without a readable ``last.pt``.
            TrainingInterrupted: SIGINT/SIGTERM arrived; ``last.pt`` was written first.
        """
        r = self.recipe
        ckpt = self.outdir / LAST
        auto = self.resume == "auto"
        if auto:
            self.resume = ckpt.is_file()
        if not auto:
            self._prepare_run_folder()
        else:
            check_outputs(self.recipe.input_files(), [], folders=[self.outdir])
        if self.resume:
            st = load_checkpoint(ckpt, map_location=self.device, prefer=LAST)
            self.load_state(st)
            changes = self._apply_recipe_changes(st["recipe"])
            marker: dict[str, Any] = {"step": self.step, "resumed": True}
            if changes:
                marker["changes"] = "; ".join(changes)
            self.history.append(marker)
            if self.rank == 0:
                if not self.quiet:
                    self.console.print(f"resumed from {ckpt} at step {self.step}")
                if changes and not self.quiet:
                    self.console.print("recipe changes applied: " + "; ".join(changes))
                if changes:
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
        if self.tensorboard and self.rank == 0:
            # purge_step: on a resume, drop the events a killed run wrote after its checkpoint
            self._tb = summary_writer_class()(log_dir=str(self.outdir / "tensorboard"),
                                              purge_step=self.step if self.resume else None)
        forced = saved = False
        try:
            with self._signals(), self._outputs_kept():
                try:
                    last_eval = self._loop()
                except _ForcedStop:
                    forced, saved = True, not self._in_step
                    if saved:  # between steps: the state is whole
                        self.save_checkpoint()
                        self._write_logs()
        finally:
            if self._tb is not None:
                self._tb.close()
                self._tb = None
        if forced:
            where = (f"checkpoint written at step {self.step}" if saved else
                     f"stopped inside step {self.step + 1}: {LAST} keeps the last checkpoint")
            raise TrainingInterrupted(
                f"stopped at once by a second {signal.Signals(self._signal or 2).name} or the end "
                f"of the {self.signal_grace_s:g} s grace period; {where}", file=str(ckpt),
                signum=self._signal or signal.SIGINT,
                hint=f"continue with: spdnn train RECIPE -o {self.outdir} --resume")
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
        show = self.show_progress and self.rank == 0
        lines = show and (not self.console.is_terminal if self.log_lines is None
                          else self.log_lines)
        log = _LineLog(self, r.name) if lines else None
        progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                            TextColumn("{task.completed}/{task.total}"),
                            TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                            TimeRemainingColumn(), console=self.console,
                            disable=not show or lines, transient=False)
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
                batches = 0
                for batch in loader:
                    batches += 1
                    self._in_step = True
                    batch = tuple(self.to_device(t) for t in batch)
                    with self._divergence_named():
                        logs = self.task.training_step(self, batch)
                    self.scaler.update()  # once per iteration, whatever the number of optimizers
                    for s in self.schedulers.values():
                        s.step()
                    for k, e in self.ema.items():
                        e.update_parameters(self.models[k])
                    self.step += 1
                    self._in_step = False
                    n_batch = batch[0].shape[0] * self.world
                    seen += n_batch
                    if log is not None:
                        log.samples += n_batch
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
                        self._tb_write(row)
                        if log is not None:
                            log.train(row)
                        progress.update(bar, info=" ".join(
                            f"{k[6:]} {v:.4f}" for k, v in row.items() if k.startswith("train_"))
                            + f" | {row['samples_per_s']:.0f} samples/s")
                    if self.step % r.eval_every == 0 or self.step == self.total_steps:
                        with self._divergence_named(validation=True):
                            last_eval = self.evaluate()
                        self.history.append({"step": self.step, "epoch": epoch, **last_eval})
                        self._tb_write(self.history[-1])
                        self._track_best(last_eval)
                        self._write_logs()
                        if log is not None:
                            log.validation(last_eval)
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
                if batches == 0:  # the checks of __init__ make this unreachable; never spin
                    raise SpdnnError(f"no training batch at step {self.step}",
                                     field="batch_size", hint="lower batch_size")
        return last_eval

    def _tb_write(self, row: dict) -> None:
        """Add a history row's numbers to the TensorBoard event file (when enabled)."""
        if self._tb is None:
            return
        for k, v in row.items():
            if k not in ("step", "epoch") and isinstance(v, (int, float)) and not isinstance(v, bool):
                self._tb.add_scalar(_tb_tag(k), v, self.step)
        self._tb.flush()

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
        plot_history(self.history, self.outdir / "plots", name=self.recipe.name)
        val_batch = next(iter(DataLoader(self.val_ds, batch_size=max(1, self.recipe.samples),
                                         generator=_private_generator())))
        val_batch = tuple(self.to_device(t) for t in val_batch)
        models = self.eval_models()
        for m in models.values():
            m.eval()
        self.task.figures(models, val_batch, self.outdir)


class _LineLog:
    """The plain progress lines of a run whose console is not a terminal (module docstring)."""

    def __init__(self, trainer: Trainer, name: str) -> None:
        self.tr = trainer
        self.name = name
        self.t0 = self.t_line = time.perf_counter()
        self.step0 = trainer.step
        self.samples = 0
        self.rows: list[dict] = []

    def _print(self, text: str) -> None:
        self.tr.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def train(self, row: dict) -> None:
        """After a history row: print a line every ``line_every`` steps and at the end."""
        self.rows.append(row)
        tr = self.tr
        if tr.step % tr.line_every and tr.step != tr.total_steps:
            return
        now = time.perf_counter()
        rate = (tr.step - self.step0) / max(1e-9, now - self.t0)
        eta = (tr.total_steps - tr.step) / rate if rate > 0 else math.inf
        parts = [f"{self.name} step {tr.step}/{tr.total_steps}"]
        for k in [k for k in row if k.startswith("train_")]:
            vals = [r[k] for r in self.rows if k in r]
            parts.append(f"{k[6:]} {_num(float(np.mean(vals)))}")
        parts += [f"{k} {v:.3g}" for k, v in row.items() if k == "lr" or k.startswith("lr_")]
        parts.append(f"{self.samples / max(1e-9, now - self.t_line):.1f} samples/s")
        parts.append(f"elapsed {_hms(now - self.t0)} ETA {_hms(eta)}")
        self._print(" | ".join(parts))
        self.rows, self.samples, self.t_line = [], 0, now

    def validation(self, ev: dict[str, float]) -> None:
        """After a validation: one line with the validation loss(es) and the best metric."""
        tr = self.tr
        keys = [k for k in ev if k.startswith("val_loss")]
        if tr.best_metric in ev and tr.best_metric not in keys:
            keys.append(tr.best_metric)
        parts = [f"{self.name} step {tr.step}/{tr.total_steps} validation"]
        parts += [f"{k} {_num(ev[k])}" for k in keys]
        if tr.best is not None:
            parts.append(f"best {tr.best_metric} {_num(tr.best)}")
        self._print(" | ".join(parts))


def _diff(a: Any, b: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """``(dotted key, old, new)`` for every leaf that differs between two plain dicts."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in list(a) + [k for k in b if k not in a]:
            out += _diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [(prefix.rstrip("."), a, b)]


# metric groups of metrics.png, in panel order: (title, y label, fixed y range, test)
_LOSS_NAMES = {"l_real", "l_fake"}
_UNIT = {"accuracy", "sensitivity", "specificity", "precision", "recall", "npv", "f1", "iou",
         "dice", "ssim", "ms_ssim", "delta1", "delta2", "delta3"}
_CORRELATION = {"mcc", "informedness", "markedness", "pcc", "uqi"}
_RATES = {"fnr", "fpr", "fdr", "for"}
_ERRORS = {"mse", "rmse", "mae"}
_RELATIVE_ERRORS = {"abs_rel", "sq_rel", "rmse_log"}
_DECIBELS = {"psnr", "snr"}
_GAN = {"k", "m_global", "mmd", "fid", "kid", "diversity"}


def _is_loss(name: str) -> bool:
    return name.startswith("loss") or name.endswith("_loss") or name in _LOSS_NAMES


METRIC_GROUPS: list[tuple[str, str, tuple[float, float] | None, Any]] = [
    ("losses", "loss", None, _is_loss),
    ("quality in [0, 1] (higher is better)", "score", (0.0, 1.0),
     lambda n: n in _UNIT or n.endswith("_acc") or n.endswith("accuracy")),
    ("agreement in [-1, 1] (higher is better)", "coefficient", (-1.0, 1.0),
     lambda n: n in _CORRELATION),
    ("error rates in [0, 1] (lower is better)", "rate", (0.0, 1.0), lambda n: n in _RATES),
    ("errors (lower is better)", "error", None,
     lambda n: n in _ERRORS or n.endswith("_mae") or n.endswith("_mse") or n.endswith("_error")),
    ("relative and log errors (lower is better)", "error", None, lambda n: n in _RELATIVE_ERRORS),
    ("signal to noise (higher is better)", "dB", None, lambda n: n in _DECIBELS),
    ("discriminator outputs in [0, 1]", "mean D(x)", (0.0, 1.0), lambda n: n.startswith("d_")),
    ("GAN measures", "value", None, lambda n: n in _GAN),
]
"""How :func:`plot_history` groups metrics into panels (a metric's name without its ``val_`` or
``train_`` prefix is tested against each group in turn; the rest get a panel each, at the end).
Fixed ranges keep a change from 0.998 to 1.000 from looking like a jump."""


def metric_group(name: str) -> int:
    """Index in :data:`METRIC_GROUPS` of a metric name (``val_``/``train_`` prefix removed);
    ``len(METRIC_GROUPS)`` for a metric of no group."""
    for i, (_, _, _, test) in enumerate(METRIC_GROUPS):
        if test(name):
            return i
    return len(METRIC_GROUPS)


def _log_axis(ax, values: list[float]) -> None:
    """A log y axis with plain-number tick labels (0.2, 0.5, 1) instead of ``2 x 10^-1``: more
    ticks per decade when the data span less than one or three decades."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_yscale("log")
    lo, hi = min(values), max(values)
    span = math.log10(hi / lo) if lo > 0 and hi > lo else 0.0
    subs = ((1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.0) if span < 1 else
            (1.0, 2.0, 5.0) if span < 3 else (1.0,))
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=subs))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
    ax.yaxis.set_minor_locator(LogLocator(base=10, subs=tuple(range(1, 10))))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _mark_resumes(ax, resumes: list[dict], label: bool) -> None:
    """Dotted vertical lines where the run was resumed; ``label``: with the word "resumed"
    and the ``--set`` changes applied then (other than a longer ``steps``)."""
    from matplotlib.transforms import blended_transform_factory

    trans = blended_transform_factory(ax.transData, ax.transAxes)
    for r in resumes:
        ax.axvline(r["step"], color="0.45", ls=":", lw=1.2, zorder=0)
        if label:
            changes = [c for c in str(r.get("changes") or "").split("; ")
                       if c and not c.startswith("steps:")]
            ax.text(r["step"], 0.98, " resumed" + (f" ({'; '.join(changes)})" if changes else ""),
                    transform=trans, rotation=90, va="top", ha="right", fontsize=7, color="0.3",
                    bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1})


def plot_history(history: list[dict], outdir: Path, name: str | None = None) -> list[Path]:
    """The training plots of a run, as PNG files (150 dpi) in ``outdir``.

    * ``loss.png``: every loss (``train_*loss*``, means over ``log_every`` steps, lines; and
      ``val_*loss*``, points), on a log axis when all are positive, titled with the run
      ``name``; dotted vertical lines where the run was resumed (history rows
      ``{"step": s, "resumed": True}``).
    * ``metrics.png`` (when there are metrics besides the losses): one panel per group of
      :data:`METRIC_GROUPS` (quality scores and error rates on a fixed [0, 1] axis,
      correlation-type coefficients on [-1, 1], errors from 0, PSNR/SNR in dB, GAN
      measures), in that order, then a panel per other metric; validation values as points,
      a task's non-loss training logs (GAN discriminator outputs, BEGAN's ``k``) as lines.

    Returns the files written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    resumes = [r for r in history if r.get("resumed")]
    rows = [r for r in history if not r.get("resumed")]

    def series(key: str) -> tuple[list[int], list[float]]:
        pts = [(r["step"], float(r[key])) for r in rows
               if key in r and r[key] is not None and math.isfinite(float(r[key]))]
        return [p[0] for p in pts], [p[1] for p in pts]

    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys and (k.startswith("train_") or k.startswith("val_"))]
    short = {k: k.split("_", 1)[1] for k in keys}
    losses = [k for k in keys if _is_loss(short[k])]
    if not any(k.startswith("train_") for k in losses):  # a task that logs no loss-named value
        losses += [k for k in keys if k.startswith("train_") and k not in losses]
    title = f"{name}: " if name else ""

    fig, ax = plt.subplots(figsize=(6.4, 4.0), layout="constrained")
    colours: dict[str, Any] = {}
    values: list[float] = []
    for key in sorted(losses, key=lambda k: (short[k], not k.startswith("train_"))):
        xs, ys = series(key)
        if not xs:
            continue
        colour = colours.setdefault(short[key], f"C{len(colours) % 10}")
        train = key.startswith("train_")
        ax.plot(xs, ys, "-" if train else "o--", color=colour, lw=1.6 if train else 1.0,
                ms=4, label=f"{short[key]} ({'train' if train else 'validation'})")
        values += ys
    if values and min(values) > 0:
        _log_axis(ax, values)
        ax.set_ylabel("loss (log scale)")
    else:
        ax.set_ylabel("loss")
    _mark_resumes(ax, resumes, label=True)
    ax.set_xlabel("step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(f"{title}loss" + (f" ({len(resumes)} resume{'s' * (len(resumes) > 1)})"
                                   if resumes else ""), fontsize=10)
    if values:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    written.append(save_figure(fig, outdir / "loss.png", dpi=150))

    metric_keys = [k for k in keys if k not in losses
                   and (k.startswith("val_") or metric_group(short[k]) < len(METRIC_GROUPS))]
    panels: dict[Any, list[str]] = {}
    for k in sorted(metric_keys, key=lambda k: (metric_group(short[k]), keys.index(k))):
        g = metric_group(short[k])
        panels.setdefault(g if g < len(METRIC_GROUPS) else k, []).append(k)
    if panels:
        cols = min(2, len(panels))
        nrows = math.ceil(len(panels) / cols)
        fig, axes = plt.subplots(nrows, cols, figsize=(5.6 * cols, 2.9 * nrows), squeeze=False,
                                 layout="constrained")
        for ax, (g, members) in zip(axes.flat, panels.items()):
            shown: list[float] = []
            for j, key in enumerate(members):
                xs, ys = series(key)
                shown += ys
                train = key.startswith("train_")
                ax.plot(xs, ys, "-", marker=None if train else "osD^vP*X"[j % 8],
                        color=f"C{j % 10}", ms=5 - 0.3 * (j % 4), lw=1.0 if train else 1.4,
                        label=short[key] + (" (train)" if train else ""))
            if isinstance(g, int):
                gtitle, ylabel, yrange, _ = METRIC_GROUPS[g]
            else:
                gtitle, ylabel, yrange = short[g], short[g], None
            if yrange is not None:  # widened only if a value falls outside (SSIM can be < 0)
                lo, hi = min([yrange[0], *shown]), max([yrange[1], *shown])
                pad = 0.03 * (hi - lo)
                ax.set_ylim(lo - pad, hi + pad)
            elif ylabel == "error":
                ax.set_ylim(bottom=0)
            ax.set_title(gtitle, fontsize=9)
            ax.set_ylabel(ylabel, fontsize=8)
            ax.set_xlabel("step", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            _mark_resumes(ax, resumes, label=False)
            if isinstance(g, int):
                ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                          borderaxespad=0, frameon=False)
        for ax in list(axes.flat)[len(panels):]:
            ax.axis("off")
        fig.suptitle(f"{title}validation metrics"
                     + ("; dotted lines: resumed" if resumes else ""), fontsize=10)
        written.append(save_figure(fig, outdir / "metrics.png", dpi=150))
    return written
