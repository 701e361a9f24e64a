"""Generator inversion: the latent code of a real image (thesis sec. 3.3.1; App. F sec. 3,
eq. 4; BEGAN, Berthelot et al. 2017 sec. 4.3), and the latents file ``spdnn invert`` writes.

Two methods (``spdnn invert --method``):

* ``optimize`` (:func:`invert_optimize`, App. F eq. 4): ``z* = argmin_z mean |x - G(z)|``, the
  mean absolute error of the BEGAN paper's inversion, minimised with Adam (App. F: "the ADAM
  optimizer is used to solve the problem, with learning rate, beta1 and beta2 equal to 0.1,
  0.9, and 0.999"). **Range**: the latent stays in the generator's U[-1, 1] by a **tanh
  reparameterisation**, ``z = tanh(w)``, Adam on ``w`` (a clamp would stall every coordinate
  that reaches a bound, since its gradient is cut). ``w`` starts at ``atanh(z0)`` for ``z0``
  drawn from U[-0.5, 0.5] (seeded). The learning rate decays on a cosine from ``lr`` to 0 over
  the steps (ours; the paper gives no schedule or step count) so the sign-like MAE gradients
  settle. Each sample's loss is its own mean, and the batch loss their sum, so a sample's
  ``z`` does not depend on the others in its batch (Adam is per coordinate).
* ``encoder`` (:func:`train_encoder`, :func:`invert_encoder`): a network ``E`` trained to
  invert the frozen ``G``, the learned inversion of SPADE-SR (Chiu et al., sec. 3.4
  "Inversion Phase", eqs. 5-6): ``L = mean |x - G(E(x))| - lambda s(G(E(x)))`` with
  ``lambda = 0.1`` and ``s`` the discriminator's realness rating; for BEGAN's auto-encoder
  discriminator the rating is minus its reconstruction error (eq. 3.1), so ``L = mean |x -
  G(E(x))| + 0.1 mean |G(E(x)) - D(G(E(x)))|``. Adam as SPADE-SR (betas 0, 0.999). One
  forward pass per image afterwards. Layers: netspecs/gan/aspect/iris_encoder_24x32.yaml
  (tanh output: z in (-1, 1)).

Reported per sample: the reconstruction MAE ``mean |to_unit(G(z)) - x|`` with images in [0, 1].

Latents file (:func:`save_latents`, :func:`load_latents`): a checkpoint-format dict (written
atomically by :func:`spdnn.io.save_checkpoint`, read with ``weights_only=True``) holding
``z`` ``(N, d)`` float32 in [-1, 1], ``mae`` ``(N,)``, ``images`` ``(N, C, H, W)`` in [0, 1]
(what was inverted, at the generator's size), the aspect when the data had one (``masks``
``(N, 1, H, W)`` 0/1 or ``landmarks`` ``(N, 2P)`` in [0, 1]), and ``meta``: the generator run,
its latent size, the method, its settings and seconds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from spdnn.errors import SpdnnError

LATENTS_FORMAT = "spdnn-latents/1"

OPTIMIZE_LR = 0.1
"""Adam learning rate of the optimisation inversion (App. F sec. 3, eq. 4)."""
OPTIMIZE_BETAS = (0.9, 0.999)
ENCODER_LAMBDA = 0.1
"""Weight of the discriminator's realness term of the encoder loss (SPADE-SR sec. 3.4)."""
ENCODER_BETAS = (0.0, 0.999)
"""Adam betas of SPADE-SR (sec. 4)."""


@dataclass
class Inversion:
    """The result of an inversion: ``z`` ``(N, d)`` float32 in [-1, 1] (CPU), the per-sample
    reconstruction ``mae`` ``(N,)`` (images in [0, 1]), the wall ``seconds`` it took and the
    method's settings."""

    z: torch.Tensor
    mae: torch.Tensor
    seconds: float
    settings: dict[str, Any] = field(default_factory=dict)


def reconstruction_mae(generator: nn.Module, z: torch.Tensor, images: torch.Tensor,
                       to_unit: Callable[[torch.Tensor], torch.Tensor], batch: int = 256
                       ) -> torch.Tensor:
    """``(N,)`` mean absolute error between ``to_unit(G(z))`` and ``images`` ``(N, C, H, W)``
    in [0, 1], per sample (``G`` on ``z``'s device)."""
    dev = next(generator.parameters()).device
    out = []
    with torch.no_grad():
        for s in range(0, len(z), batch):
            rec = to_unit(generator(z[s:s + batch].to(dev))).cpu()
            out.append((rec - images[s:s + batch].float()).abs().flatten(1).mean(1))
    return torch.cat(out) if out else torch.zeros(0)


def _frozen(module: nn.Module) -> list[bool]:
    flags = [p.requires_grad for p in module.parameters()]
    for p in module.parameters():
        p.requires_grad_(False)
    return flags


def _unfreeze(module: nn.Module, flags: list[bool]) -> None:
    for p, f in zip(module.parameters(), flags):
        p.requires_grad_(f)


def invert_optimize(generator: nn.Module, images: torch.Tensor, *,
                    to_net: Callable[[torch.Tensor], torch.Tensor] = lambda x: x,
                    to_unit: Callable[[torch.Tensor], torch.Tensor] = lambda x: x.clamp(0, 1),
                    steps: int = 200, lr: float = OPTIMIZE_LR,
                    betas: tuple[float, float] = OPTIMIZE_BETAS, batch_size: int = 256,
                    seed: int = 0, latent_size: int | None = None,
                    progress: Callable[[int], None] | None = None) -> Inversion:
    """Invert ``G`` on ``images`` by Adam on the MAE (module docstring, App. F eq. 4).

    Args:
        generator: ``z (n, d) -> (n, C, H, W)`` in the networks' pixel range; its parameters
            are not changed (gradients flow only into ``z``). Runs on its own device.
        images: ``(N, C, H, W)`` float in [0, 1], the generator's image shape.
        to_net, to_unit: [0, 1] -> the networks' range and back (a GAN task's ``to_net`` /
            ``to_unit``).
        steps: Adam steps per batch (>= 1); lr, betas: Adam's.
        batch_size: images inverted together (the result does not depend on it).
        seed: seeds the starting points.
        latent_size: ``d`` (default: the input features of the generator's first linear layer).
        progress: called with the number of images finished after each batch.

    Returns:
        :class:`Inversion` (``z`` on the CPU).

    Raises:
        SpdnnError: ``steps`` < 1, or images whose shape is not the generator's output's.
    """
    if steps < 1:
        raise SpdnnError(f"inversion steps must be >= 1, got {steps}", field="--steps")
    dev = next(generator.parameters()).device
    d = int(latent_size or _latent_size(generator))
    was_training = generator.training
    generator.eval()
    flags = _frozen(generator)
    g = torch.Generator().manual_seed(seed)
    z0 = (torch.rand(len(images), d, generator=g) - 0.5)  # U[-0.5, 0.5]
    zs, t0 = [], time.perf_counter()
    try:
        for s in range(0, len(images), batch_size):
            x = to_net(images[s:s + batch_size].float().to(dev))
            w = torch.atanh(z0[s:s + batch_size]).to(dev).requires_grad_(True)
            opt = torch.optim.Adam([w], lr=lr, betas=betas)
            sched = torch.optim.lr_scheduler.LambdaLR(
                opt, lambda k: 0.5 * (1 + math.cos(math.pi * k / steps)))
            for _ in range(steps):
                rec = generator(torch.tanh(w))
                if rec.shape != x.shape:
                    raise SpdnnError(f"the generator makes images of shape "
                                     f"{tuple(rec.shape[1:])}, the data has {tuple(x.shape[1:])}",
                                     field="--data", hint="give images of the generator's size")
                loss = (rec.float() - x).abs().flatten(1).mean(1).sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
            zs.append(torch.tanh(w.detach()).cpu())
            if progress is not None:
                progress(min(s + batch_size, len(images)))
    finally:
        _unfreeze(generator, flags)
        generator.train(was_training)
    seconds = time.perf_counter() - t0
    z = torch.cat(zs) if zs else torch.zeros(0, d)
    mae = reconstruction_mae(generator, z, images, to_unit)
    return Inversion(z, mae, seconds, {"method": "optimize", "steps": steps, "lr": lr,
                                       "betas": list(betas), "range": "tanh",
                                       "batch_size": batch_size, "seed": seed})


def _latent_size(generator: nn.Module) -> int:
    """The generator's latent size: the input features of its first linear layer."""
    for m in generator.modules():
        if isinstance(m, nn.Linear):
            return m.in_features
    raise SpdnnError("the generator has no linear input layer, so its latent size is unknown",
                     field="models.generator")


def encoder_loss(images: torch.Tensor, reconstruction: torch.Tensor,
                 realness: torch.Tensor | None, lam: float = ENCODER_LAMBDA) -> torch.Tensor:
    """The inversion encoder's loss, SPADE-SR sec. 3.4 eqs. 5-6: ``L_rec - lam L_adv`` with
    ``L_rec = mean |x - G(E(x))|`` over images ``(n, C, H, W)`` (the networks' range) and
    ``L_adv = mean s(G(E(x)))`` over the discriminator's realness ratings ``(n, ...)`` of the
    reconstructions (``None``: no adversarial term). float32 scalar."""
    loss = (reconstruction.float() - images.float()).abs().mean()
    if realness is not None and lam:
        loss = loss - lam * realness.float().mean()
    return loss


def train_encoder(encoder: nn.Module, generator: nn.Module, images: torch.Tensor, *,
                  discriminator: nn.Module | None = None,
                  to_net: Callable[[torch.Tensor], torch.Tensor] = lambda x: x,
                  steps: int = 500, lr: float = 2e-4,
                  betas: tuple[float, float] = ENCODER_BETAS, batch_size: int = 32,
                  lam: float = ENCODER_LAMBDA, seed: int = 0,
                  progress: Callable[[int], None] | None = None) -> float:
    """Train ``encoder`` (image -> z) in place to invert the frozen ``generator`` on
    ``images`` ``(N, C, H, W)`` in [0, 1] (module docstring; SPADE-SR sec. 3.4 eqs. 5-6): Adam
    on :func:`encoder_loss` with the BEGAN rating, ``mean |x - G(E(x))| + lam mean |G(E(x)) -
    D(G(E(x)))|`` (the second term only with a BEGAN auto-encoder ``discriminator``), batches
    drawn with replacement (seeded). (SPADE-SR's own encoder trains on the trainer:
    :mod:`spdnn.tasks.gan.spade_sr_inversion`.)

    Returns:
        the wall seconds of the training. ``G`` and ``D`` are left unchanged; ``E`` is left in
        eval mode.
    """
    dev = next(generator.parameters()).device
    encoder.to(dev).train()
    nets = [generator] + ([discriminator] if discriminator is not None else [])
    states = [(m.training, _frozen(m)) for m in nets]
    for m in nets:
        m.eval()
    opt = torch.optim.Adam(encoder.parameters(), lr=lr, betas=betas)
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    try:
        for k in range(steps):
            idx = torch.randint(len(images), (min(batch_size, len(images)),), generator=g)
            x = to_net(images[idx].float().to(dev))
            rec = generator(encoder(x))
            realness = None  # BEGAN's rating: minus the auto-encoder's error (eq. 3.1)
            if discriminator is not None and lam:
                realness = -(discriminator(rec).float() - rec.float()).abs().flatten(1).mean(1)
            loss = encoder_loss(x, rec, realness, lam)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if progress is not None:
                progress(k + 1)
    finally:
        for m, (training, flags) in zip(nets, states):
            _unfreeze(m, flags)
            m.train(training)
    encoder.eval()
    return time.perf_counter() - t0


def invert_encoder(encoder: nn.Module, generator: nn.Module, images: torch.Tensor, *,
                   to_net: Callable[[torch.Tensor], torch.Tensor] = lambda x: x,
                   to_unit: Callable[[torch.Tensor], torch.Tensor] = lambda x: x.clamp(0, 1),
                   batch_size: int = 256, train_seconds: float = 0.0,
                   settings: dict[str, Any] | None = None) -> Inversion:
    """``z = E(x)`` clamped to [-1, 1] for ``images`` ``(N, C, H, W)`` in [0, 1] with a trained
    encoder (:func:`train_encoder`), and the reconstruction MAE; ``seconds`` is the inference
    time plus ``train_seconds``."""
    dev = next(generator.parameters()).device
    encoder.eval()
    t0 = time.perf_counter()
    with torch.no_grad():
        z = torch.cat([encoder(to_net(images[s:s + batch_size].float().to(dev))).float().cpu()
                       for s in range(0, len(images), batch_size)]).clamp(-1, 1)
    seconds = time.perf_counter() - t0 + train_seconds
    mae = reconstruction_mae(generator, z, images, to_unit)
    return Inversion(z, mae, seconds, {"method": "encoder", "train_seconds": train_seconds,
                                       "inference_seconds": seconds - train_seconds,
                                       **(settings or {})})


# -- latents file -------------------------------------------------------------------------------
def save_latents(path: str | Path, inversion: Inversion, images: torch.Tensor,
                 aspects: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Write a latents file (module docstring) atomically; ``aspects``: ``{"masks": ...}`` or
    ``{"landmarks": ...}`` or ``{}``."""
    from spdnn.io import save_checkpoint

    state = {"format": LATENTS_FORMAT, "z": inversion.z.float().contiguous(),
             "mae": inversion.mae.float().contiguous(), "images": images.float().contiguous(),
             "meta": {**meta, **inversion.settings, "seconds": inversion.seconds,
                      "z_dim": int(inversion.z.shape[1])}}
    for k, v in aspects.items():
        state[k] = v.float().contiguous()
    return save_checkpoint(state, path)


def load_latents(path: str | Path) -> dict[str, Any]:
    """Read a latents file of :func:`save_latents` (``weights_only=True``).

    Raises:
        SpdnnError: missing, unreadable or not a latents file (naming it).
    """
    from spdnn.io import load_checkpoint

    p = Path(path)
    if not p.is_file():
        raise SpdnnError("no such latents file", file=str(p),
                         hint="write one with: spdnn invert RUN -o latents.pt")
    st = load_checkpoint(p, run=False)
    if st.get("format") != LATENTS_FORMAT or "z" not in st:
        raise SpdnnError("not a latents file of 'spdnn invert'", file=str(p),
                         hint="write one with: spdnn invert RUN -o latents.pt")
    return st
