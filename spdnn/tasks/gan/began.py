"""BEGAN: Boundary Equilibrium GAN (Berthelot et al. 2017), the GAN of most of the thesis'
generative work (thesis sec. 3.3, eqs. 3.1-3.2; App. F-I; the authors' code, architectures.md
sec. 2.3).

* Models: ``generator`` (latent ``z`` -> image) and ``discriminator``, an **auto-encoder**
  (image -> its reconstruction, same shape; netspecs/gan/began/).
* Reconstruction loss (eq. 3.1): ``L(v) = mean |v - D(v)|`` over pixels (the L1 of the
  authors' code and of the BEGAN paper; the thesis prints the norm as ``|.|^2``, the code uses
  the mean absolute error, which we follow).
* Objectives (eq. 3.2): ``L_D = L(x) - k_t L(G(z_D))``, ``L_G = L(G(z_G))`` and the
  proportional control ``k_{t+1} = clip(k_t + lambda_k (gamma L(x) - L(G(z_G))), 0, 1)``,
  ``k_0 = 0``, once per iteration (``options.gamma`` 0.5, ``options.lambda_k`` 0.001, as every
  BEGAN script of the authors).
* Convergence measure: ``M_global = L(x) + |gamma L(x) - L(G(z))|``, logged at every step,
  evaluated on the validation set (``val_m_global``, the best checkpoint: lowest, as the
  authors kept the G/D with the lowest M_global) and plotted with ``k_t`` in
  ``plots/began.png``.
* Order of updates: the authors update G and D simultaneously in one compiled step; here the
  discriminator is updated first (on ``x`` and a detached ``G(z)``), then the generator against
  the updated discriminator, with the same ``z`` (the usual alternating form in PyTorch).
* ``z ~ U[-1, 1]`` (``options.latent: uniform``, the authors' choice).

The discriminator here reconstructs; it has no sigmoid head to read as logits, so
:attr:`logit_models` is empty.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from pydantic import Field

from spdnn.io import save_figure
from spdnn.tasks.gan.base import GANOptions, GANTask
from spdnn.tasks.registry import register_task


class BEGANOptions(GANOptions):
    """``options:`` of BEGAN (thesis eq. 3.2; architectures.md sec. 2.3)."""

    latent: Literal["normal", "uniform"] = "uniform"
    gamma: float = Field(default=0.5, gt=0, le=1)
    """Equilibrium ratio gamma = E[L(G(z))] / E[L(x)] (diversity vs quality)."""
    lambda_k: float = Field(default=0.001, gt=0, le=1)
    """Learning rate of the control variable k_t."""
    k_init: float = Field(default=0.0, ge=0, le=1)
    """k_0."""


def reconstruction_loss(v: torch.Tensor, rec: torch.Tensor) -> torch.Tensor:
    """``L(v)`` of eq. 3.1 per batch: mean absolute error between ``v`` and the auto-encoder's
    ``rec`` (both ``(n, C, H, W)``), in float32; a scalar."""
    return (v.float() - rec.float()).abs().mean()


@register_task
class BEGANTask(GANTask):
    """BEGAN (see the module docstring)."""

    name = "began"
    model_names = ("generator", "discriminator")
    Options = BEGANOptions
    logit_models = ()
    default_best_metric = "val_m_global"
    default_best_mode = "min"

    def __init__(self, recipe, netspecs) -> None:
        super().__init__(recipe, netspecs)
        from spdnn.errors import SpecError
        from spdnn.shapes import infer

        d_out = tuple(list(infer(netspecs["discriminator"]).output_shapes().values())[0])
        if d_out != self.image_shape:
            raise SpecError(f"a BEGAN discriminator is an auto-encoder: its output must have the "
                            f"image's shape {self.image_shape}, it has {d_out}",
                            field="models.discriminator",
                            hint="use a netspec of netspecs/gan/began/ (encoder + decoder)")
        self.k = float(self.options.k_init)

    def state_dict(self):
        return {"k": torch.tensor(self.k, dtype=torch.float64)}

    def load_state_dict(self, state):
        if "k" in state:
            self.k = float(state["k"])

    def m_global(self, l_real: float, l_fake: float) -> float:
        """``M_global = L(x) + |gamma L(x) - L(G(z))|`` (BEGAN sec. 3.4.1)."""
        return l_real + abs(self.options.gamma * l_real - l_fake)

    def adversarial_losses(self, trainer, real: torch.Tensor, fake: torch.Tensor):
        """Update the auto-encoder on ``L(x) - k_t L(G(z))``, then ``k_t``; returns ``(logs,
        L(G(z)))`` against the updated discriminator, still to back-propagate into G."""
        D = trainer.train_models["discriminator"]
        n = real.shape[0]
        with trainer.autocast():
            rec = D(torch.cat([real, fake.detach()]))
        l_real = reconstruction_loss(real, rec[:n])
        l_fake = reconstruction_loss(fake.detach(), rec[n:])
        loss_d = l_real - self.k * l_fake
        trainer.backward_step(loss_d, "discriminator")
        lr, lf = float(l_real.detach()), float(l_fake.detach())
        k_used = self.k
        self.k = min(1.0, max(0.0, self.k + self.options.lambda_k * (self.options.gamma * lr - lf)))
        with trainer.autocast():
            rec_g = D(fake)
        loss_g = reconstruction_loss(fake, rec_g)
        return ({"loss_d": float(loss_d.detach()), "l_real": lr, "l_fake": lf, "k": k_used,
                 "m_global": self.m_global(lr, lf)}, loss_g)

    def training_step(self, trainer, batch):
        real = self.to_net(batch[0])
        z = self.latent(real.shape[0], real.device, **self.batch_conditions(batch))
        with trainer.autocast():
            fake = trainer.train_models["generator"](z)
        logs, loss_g = self.adversarial_losses(trainer, real, fake)
        trainer.backward_step(loss_g, "generator")
        return {**logs, "loss_g": float(loss_g.detach())}

    def batch_conditions(self, batch) -> dict[str, torch.Tensor]:
        """The conditions of a training batch's real images for the latent (none here)."""
        return {}

    def validation_step(self, models, batch, metrics):
        real = batch[0]
        z = self.latent(real.shape[0], real.device, generator=self._val_z,
                        **self.batch_conditions(batch))
        fake = models["generator"](z).float()
        if metrics is not None:
            metrics.update(self.to_unit(fake), real)
        return self.adversarial_validation(models, self.to_net(real), fake)

    def adversarial_validation(self, models, real: torch.Tensor, fake: torch.Tensor
                               ) -> dict[str, float]:
        """Validation values of the game for ``real`` and ``fake`` (networks' range): both
        reconstruction losses, ``L_D`` at the current ``k_t``, ``L_G`` and M_global (VAR+GAN
        reuses it)."""
        D = models["discriminator"]
        lr = float(reconstruction_loss(real, D(real)))
        lf = float(reconstruction_loss(fake, D(fake)))
        return {"loss_d": lr - self.k * lf, "loss_g": lf, "l_real": lr, "l_fake": lf,
                "m_global": self.m_global(lr, lf)}

    def figures(self, models, batch, outdir: Path) -> list[Path]:
        return super().figures(models, batch, outdir) + self._plot_convergence(outdir)

    def _plot_convergence(self, outdir: Path) -> list[Path]:
        """``plots/began.png``: M_global (train and validation) and k_t over the steps."""
        import csv

        path = outdir / "metrics.csv"
        if not path.is_file():
            return []
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        train = [(int(r["step"]), float(r["train_m_global"]), float(r["train_k"])) for r in rows
                 if r.get("train_m_global")]
        val = [(int(r["step"]), float(r["val_m_global"])) for r in rows if r.get("val_m_global")]
        if not train:
            return []
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.4, 3.4))
        ax.plot([t[0] for t in train], [t[1] for t in train], label="M_global (train)",
                color="tab:blue")
        if val:
            ax.plot([v[0] for v in val], [v[1] for v in val], "o-", label="M_global (val)",
                    color="tab:orange")
        ax.set_xlabel("step")
        ax.set_ylabel("M_global = L(x) + |gamma L(x) - L(G(z))|")
        ax2 = ax.twinx()
        ax2.plot([t[0] for t in train], [t[2] for t in train], color="tab:gray", lw=1,
                 label="k_t")
        ax2.set_ylabel("k_t")
        lines = ax.get_legend_handles_labels()
        lines2 = ax2.get_legend_handles_labels()
        ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=8, loc="upper right")
        ax.set_title(f"{self.recipe.name}: BEGAN convergence (gamma {self.options.gamma})",
                     fontsize=10)
        fig.tight_layout()
        return [save_figure(fig, outdir / "plots" / "began.png", dpi=120)]
