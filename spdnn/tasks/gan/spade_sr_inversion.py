"""SPADE-SR's inversion phase (Chiu et al., seed 001, sec. 3.4 "Inversion Phase", eqs. 5-6):
an encoder ``I`` maps a real image to its non-thermal code ``z~ = I(x)`` so that ``G(z~, h)``
rebuilds it; afterwards ``z~`` combines with other heatmaps (paper Fig. 7).

* Models: ``encoder`` (netspecs/spade_sr/encoder.yaml: image ``(3, 40, 64)`` in [-1, 1] -> ``z``
  ``(128,)``, batch-normed) and ``discriminator``, **initialised from the trained GAN run**
  and trained on (sec. 4.2: "learning rates 2e-4 and 5e-5 for the D and I ... update ratio for
  D to I ... 1:1", in-domain inversion [52]). The generator is the GAN run's (its EMA weights
  when it has them), frozen and held by the task, not trained or checkpointed here.
* ``options.gan_run``: the ``spade_sr`` run folder (or one of its checkpoints) to invert, read
  with :func:`spdnn.io.load_checkpoint` (``weights_only=True``); a relative path is taken from
  the working directory, as ``spdnn train`` writes ``runs/<name>``. The run must still exist
  when the inversion run is evaluated or predicts.
* Losses (float32):

  - ``I`` (eqs. 5-6, :func:`spdnn.tasks.gan.invert.encoder_loss`): ``L^I = mean |x - G(z~, h)|
    - lambda mean s(G(z~, h))`` with ``lambda = 0.1`` (``options.lam``), pixels in [-1, 1];
  - ``D``: the paper gives no inversion-phase loss for D; here the GAN phase's hinge (eq. 1)
    with the reconstructions as the fake side, plus ``beta R1`` (eq. 2, ``beta = 5``), without
    the heatmap term (ours).

  One D update, then one I update, per iteration; Adam betas (0, 0.999), lr 2e-4 (D) / 5e-5
  (I), EMA 0.99 of I (sec. 4.2), set in the recipe.
* Validation: ``val_recon`` = ``mean |x - G(I(x), h)|`` with images in [0, 1] (best metric), the
  losses and the mean scores.
* Evaluation (:meth:`SpadeSRInversionTask.report`): ``recon`` as above on the validation set
  (frame-wise: each frame rebuilt from its own code; the paper's "recon." of Table 3 rebuilds a
  whole clip of one person and outfit from the code of one random frame of it, which needs clip
  labels this data does not have), ``recon_swap`` (every frame rebuilt from the code of another
  random validation frame with its own heatmap: the clip protocol without clips, so the
  non-thermal attributes differ and it is an upper bound), and ``disentangle.png`` (paper Fig.
  7: the top row source images, the left column heatmaps, each cell ``G(I(source), heatmap)``).
* ``spdnn predict RUN heat.npy`` works as for the GAN run (the inverted G).

Raises (when the task is built): no or an unreadable ``options.gan_run``, a run that is not
``spade_sr``, an encoder whose input is not G's image or whose output is not G's ``z``, a
discriminator that does not fit the run's weights.
"""

from __future__ import annotations

from pathlib import Path

import torch
from pydantic import Field

from spdnn.errors import SpdnnError, SpecError
from spdnn.tasks.gan.invert import ENCODER_LAMBDA, encoder_loss
from spdnn.tasks.gan.spade_sr import (
    R1_BETA,
    SpadeSROptions,
    SpadeSRTask,
    _stack,
    hinge_d_loss,
    hinge_g_loss,
)
from spdnn.tasks.registry import register_task


class SpadeSRInversionOptions(SpadeSROptions):
    """``options:`` of ``spade_sr_inversion``."""

    gan_run: str = Field(min_length=1)
    """The trained ``spade_sr`` run (folder or checkpoint file) whose G is inverted."""
    lam: float = Field(default=ENCODER_LAMBDA, ge=0, le=1e4)
    """lambda of eq. 6 ("We set lambda = 0.1")."""
    r1_beta: float = Field(default=R1_BETA, ge=0, le=1e4)
    """beta of R1 in D's inversion-phase loss (the GAN phase's, eq. 4)."""


@register_task
class SpadeSRInversionTask(SpadeSRTask):
    """SPADE-SR inversion encoder (see the module docstring)."""

    name = "spade_sr_inversion"
    model_names = ("encoder", "discriminator")
    Options = SpadeSRInversionOptions
    image_models = ("discriminator", "encoder")
    default_best_metric = "val_recon"
    default_best_mode = "min"
    summary_metrics = ("recon", "recon_swap", "val_recon")

    def __init__(self, recipe, netspecs) -> None:
        from spdnn import spec as S
        from spdnn.codegen.build import build_module
        from spdnn.io import averaged_weights, load_checkpoint
        from spdnn.shapes import infer
        from spdnn.tasks.common import validate_options

        opts = validate_options(self.Options, getattr(recipe, "options", {}))
        st = load_checkpoint(Path(opts.gan_run))
        file = st["path"]
        task = st.get("recipe", {}).get("task")
        if task != "spade_sr" or "generator" not in st.get("netspecs", {}):
            raise SpecError(f"options.gan_run is a '{task}' run, not a spade_sr GAN run",
                            file=file, field="options.gan_run",
                            hint="train one with: spdnn train recipes/thermal/spade_sr_64.yaml")
        g_spec = S.loads(st["netspecs"]["generator"], file=f"{file}:netspecs.generator")
        super().__init__(recipe, {**netspecs, "generator": g_spec})
        self.netspecs = dict(netspecs)  # checkpoints of this run keep E and D only
        e = netspecs["encoder"]
        z_out = tuple(list(infer(e).output_shapes().values())[0])
        if z_out != (self.z_dim,):
            raise SpecError(f"the encoder outputs {z_out}, the generator's z is ({self.z_dim},)",
                            field="models.encoder", hint=f"end the encoder in {self.z_dim} "
                            "features")
        with torch.random.fork_rng(devices=[]):
            self.generator = build_module(g_spec)
        self.generator.load_state_dict(averaged_weights(st, "generator")
                                       or st["models"]["generator"])
        self.generator.eval().requires_grad_(False)
        self._gan_discriminator = st["models"]["discriminator"]
        self.gan_file = file

    def build_models(self, nets):
        """The encoder as built; the discriminator with the GAN run's weights.

        Raises:
            SpecError: the recipe's discriminator does not fit those weights.
        """
        try:
            nets["discriminator"].load_state_dict(self._gan_discriminator)
        except RuntimeError as exc:
            raise SpecError(f"the discriminator does not fit the GAN run's weights "
                            f"({' '.join(str(exc).split())[:160]})", field="models.discriminator",
                            file=self.gan_file, hint="use the GAN run's discriminator netspec"
                            ) from None
        return nets

    def generator_of(self, models) -> torch.nn.Module:
        """The frozen G of the GAN run, on the encoder's device."""
        return self._g(next(models["encoder"].parameters()).device)

    def _g(self, device) -> torch.nn.Module:
        if next(self.generator.parameters()).device != torch.device(device):
            self.generator.to(device)
        return self.generator

    def rebuild(self, E, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z~ = I(x), G(z~, h))`` for images ``x`` in [-1, 1] and heatmaps ``h``."""
        z = E(x)
        return z, self._g(x.device)(z, h)

    # -- steps ----------------------------------------------------------------------------------
    def training_step(self, trainer, batch):
        x, h = self.to_net(batch[0]), batch[1].float()
        E, D = trainer.train_models["encoder"], trainer.train_models["discriminator"]
        with trainer.autocast():
            _, rec = self.rebuild(E, x, h)
        real = x.detach().requires_grad_(self.options.r1_beta > 0)
        with trainer.autocast():
            s_real, _ = self.discriminate(D, real)
            s_fake, _ = self.discriminate(D, rec.detach())
        adv = hinge_d_loss(s_real, s_fake)
        logs = {"loss_d_adv": float(adv.detach())}
        loss_d = self.with_r1(trainer, adv, s_real, real, logs)
        trainer.backward_step(loss_d, "discriminator")
        with trainer.autocast():
            s_rec, _ = self.discriminate(D, rec)
        loss_e = encoder_loss(x, rec, s_rec, self.options.lam)
        trainer.backward_step(loss_e, "encoder")
        return {"loss_d": float(loss_d.detach()), "loss_e": float(loss_e.detach()),
                "s_rec": float(s_rec.detach().float().mean()), **logs}

    def validation_step(self, models, batch, metrics):
        x01, h = batch[0], batch[1].float()
        x = self.to_net(x01)
        _, rec = self.rebuild(models["encoder"], x, h)
        s_real, _ = (t.float() for t in self.discriminate(models["discriminator"], x))
        s_rec, _ = (t.float() for t in self.discriminate(models["discriminator"], rec))
        return {"recon": float((self.to_unit(rec) - x01.float()).abs().mean()),
                "loss_e": float(encoder_loss(x, rec, s_rec, self.options.lam)),
                "loss_d": float(hinge_d_loss(s_real, s_rec)),
                "loss_g": float(hinge_g_loss(s_rec)),
                "s_real": float(s_real.mean()), "s_rec": float(s_rec.mean())}

    def new_metrics(self):
        return None

    # -- figures and evaluation -----------------------------------------------------------------
    def figures(self, models, batch, outdir: Path) -> list[Path]:
        return [self.disentangle_figure(models, batch[0][:6], batch[1][:6],
                                        outdir / "disentangle.png")]

    @torch.no_grad()
    def disentangle_figure(self, models, sources: torch.Tensor, heatmaps: torch.Tensor,
                           dest: Path) -> Path:
        """``disentangle.png`` (paper Fig. 7): the source images ``(k, 3, H, W)`` in [0, 1]
        across the top, the heatmaps ``(n, 1, h, w)`` down the left, each cell ``G(I(source),
        heatmap)``."""
        from spdnn.tasks.common import sample_grid
        from spdnn.tasks.gan.spade_sr import heatmap_image

        E = models["encoder"]
        dev = next(E.parameters()).device
        z = E(self.to_net(sources.to(dev).float()))
        k, n = len(sources), len(heatmaps)
        G = self._g(dev)
        cells = self.to_unit(G(z.repeat(n, 1), heatmaps.to(dev).float().repeat_interleave(k, 0)))
        rows = [torch.cat([torch.ones(1, *self.image_shape), sources.float().cpu()])]
        hm = heatmap_image(heatmaps, self.image_size)
        for i in range(n):
            rows.append(torch.cat([hm[i:i + 1], cells[i * k:(i + 1) * k].cpu()]))
        return sample_grid(torch.cat(rows), dest, f"{self.recipe.name}: sources (top) x "
                           "heatmaps (left): G(I(source), heatmap)", cols=k + 1)

    @torch.no_grad()
    def report(self, models, outdir: Path, device) -> dict[str, float]:
        """``recon``, ``recon_swap`` (module docstring) and ``disentangle.png`` in ``outdir``."""
        outdir = Path(outdir)
        outdir.mkdir(parents=True, exist_ok=True)
        _, val = self.datasets()
        if len(val) < 2:
            raise SpdnnError("the inversion evaluation needs at least 2 validation images",
                             field="data.val_size")
        x01, h = _stack(val)
        E = models["encoder"]
        dev = torch.device(device)
        G = self._g(dev)
        own, swap = [], []
        other = torch.roll(torch.randperm(len(val), generator=torch.Generator().manual_seed(0)),
                           1)
        for s in range(0, len(val), 128):
            xb, hb = x01[s:s + 128].to(dev), h[s:s + 128].to(dev)
            z = E(self.to_net(xb))
            own.append((self.to_unit(G(z, hb)).cpu() - xb.cpu()).abs().flatten(1).mean(1))
            zo = E(self.to_net(x01[other[s:s + 128]].to(dev)))
            swap.append((self.to_unit(G(zo, hb)).cpu() - xb.cpu()).abs().flatten(1).mean(1))
        self.disentangle_figure(models, x01[:6], h[6:12] if len(val) >= 12 else h[:6],
                                outdir / "disentangle.png")
        return {"recon": float(torch.cat(own).mean()), "recon_swap": float(torch.cat(swap).mean())}
