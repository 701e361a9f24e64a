"""The class-conditional GAN tasks (issue 10, "Methods"): CGAN and CBEGAN
(:mod:`spdnn.tasks.gan.cgan`), ACGAN (:mod:`spdnn.tasks.gan.acgan`) and VAC+GAN on DCGAN and
BEGAN (:mod:`spdnn.tasks.gan.vac`), on scikit-learn's real 8x8 digits with tiny networks.

What is checked: the class code puts the requested class into ``z`` exactly as documented;
the VAC generator loss is ``alpha`` x the adversarial gradient + ``beta`` x the classifier's
cross-entropy gradient (each recomputed independently); the VAC mixin trains on DCGAN and
BEGAN; ACGAN's discriminator loss holds the class cross-entropy on real and fake images;
CGAN's discriminator reads the label; every bad input is a one-line error naming its field;
a three-optimizer run (VAC+BEGAN, with k_t) resumes bit-exactly.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from spdnn.errors import SpecError
from spdnn.runs import trainer_for
from spdnn.tasks import build_task
from spdnn.train import load_recipe
from tests.helpers import ROOT

DCGAN_G = ROOT / "netspecs/gan/dcgan/digits_generator.yaml"      # z 32 -> 1x8x8, sigmoid
DCGAN_D = ROOT / "netspecs/gan/dcgan/digits_discriminator.yaml"  # 1x8x8 -> logit
BEGAN_G = ROOT / "netspecs/gan/began/digits_generator.yaml"      # z 16 -> 1x8x8
BEGAN_D = ROOT / "netspecs/gan/began/digits_discriminator.yaml"  # 1x8x8 auto-encoder

# tiny networks for 8x8 digits (no dropout, so a forward pass can be repeated exactly)
CLASSIFIER = """
# test classifier (thesis App. H Table 3 layout, tiny)
name: tiny_classifier
input: {{name: image, channels: 1, height: 8, width: 8}}
layers:
  - {{name: conv, op: Conv2d, kernel_size: 3, stride: 2, padding: 1, out_channels: 8, activation: relu}}
  - {{name: flat, op: Flatten}}
  - {{name: fc, op: Linear, out_features: {k}, activation: {act}}}
output: {{name: probs, from: fc}}
"""
CGAN_D = """
# test CGAN discriminator (Mirza & Osindero sec. 3.2: the label enters D)
name: tiny_cgan_d
inputs:
  - {{name: image, channels: 1, height: 8, width: 8}}
  - {{name: label, features: 1, dtype: int64, num_classes: {k}}}
layers:
  - {{name: embed, op: Embedding, num_embeddings: {k}, embedding_dim: 64, inputs: [label]}}
  - {{name: label_map, op: Reshape, shape: [1, 8, 8]}}
  - {{name: cat, op: Concat, inputs: [image, label_map]}}
  - {{name: conv, op: Conv2d, kernel_size: 3, stride: 2, padding: 1, out_channels: 8,
     activation: leaky_relu, negative_slope: 0.2}}
  - {{name: flat, op: Flatten}}
  - {{name: fc, op: Linear, out_features: 1, activation: sigmoid}}
output: {{name: prob, from: fc}}
"""
ACGAN_D = """
# test ACGAN discriminator (Odena et al. sec. 3: source and class heads)
name: tiny_acgan_d
input: {{name: image, channels: 1, height: 8, width: 8}}
layers:
  - {{name: conv, op: Conv2d, kernel_size: 3, stride: 2, padding: 1, out_channels: 8,
     batch_norm: true, activation: leaky_relu, negative_slope: 0.2}}
  - {{name: flat, op: Flatten}}
  - {{name: src, op: Linear, out_features: 1, activation: sigmoid, inputs: [flat]}}
  - {{name: cls, op: Linear, out_features: {k}, activation: softmax, inputs: [flat]}}
outputs:
  - {{name: prob, from: src}}
  - {{name: class_probs, from: cls}}
"""
SMALL_G = """
# test generator with a 4-value latent (too small for the 10-class code)
name: small_g
input: {name: z, features: 4}
layers:
  - {name: fc, op: Linear, out_features: 64, activation: sigmoid}
  - {name: img, op: Reshape, shape: [1, 8, 8]}
output: {name: image, from: img}
"""


WITH_PLOTS = {"test_vac_mixin_trains_on_dcgan_and_began[vacgan]"}


@pytest.fixture(autouse=True)
def no_plots(request, monkeypatch):
    """Skip the end-of-run plots (matplotlib: seconds per run) except where a test reads them."""
    if request.node.name in WITH_PLOTS:
        return
    import spdnn.tasks.gan.base as base
    import spdnn.train.trainer as trainer
    from spdnn.tasks.gan.began import BEGANTask

    monkeypatch.setattr(trainer, "plot_history", lambda *a, **k: [])
    monkeypatch.setattr(base, "sample_grid", lambda imgs, dest, *a, **k: dest)
    monkeypatch.setattr(BEGANTask, "_plot_convergence", lambda self, outdir: [])


def write(tmp_path: Path, name: str, text: str) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    p = tmp_path / f"{name}.yaml"
    p.write_text(text)
    return p


def recipe(tmp_path: Path, task: str, *, k: int = 10, classifier: str | None = None,
           discriminator: Path | None = None, generator: Path | None = None,
           options: str = "{}", steps: int = 3, extra: list[str] | None = None,
           name: str = "run"):
    """A recipe of ``task`` on digits with the tiny networks above."""
    began = task in ("began", "cbegan", "vacbegan")
    g = generator or (BEGAN_G if began else DCGAN_G)
    d = discriminator or (BEGAN_D if began else DCGAN_D)
    if discriminator is None and task == "cgan":
        d = write(tmp_path, "cgan_d", CGAN_D.format(k=k))
    if discriminator is None and task == "acgan":
        d = write(tmp_path, "acgan_d", ACGAN_D.format(k=k))
    models = f"  generator: {{netspec: {g}}}\n  discriminator: {{netspec: {d}}}\n"
    if task.startswith("vac"):
        c = classifier or CLASSIFIER.format(k=k, act="softmax" if k > 1 else "sigmoid")
        cpath = write(tmp_path, "classifier", c)
        models += (f"  classifier:\n    netspec: {cpath}\n"
                   "    optim: {name: sgd, lr: 0.01, momentum: 0.9, nesterov: true}\n")
    text = f"""name: {name}
task: {task}
models:
{models}data: {{source: digits, train_size: 64, val_size: 16, seed: 0}}
options: {options}
optim: {{name: adam, lr: 0.001, betas: [0.5, 0.999]}}
batch_size: 16
steps: {steps}
eval_every: {steps}
checkpoint_every: 2
log_every: 1
samples: 4
seed: 3
"""
    return load_recipe(write(tmp_path, f"recipe_{name}", text), extra or [])


# --------------------------------------------------------------------------------------------
# class codes
# --------------------------------------------------------------------------------------------
def test_thesis_class_code_signs_many_classes(tmp_path):
    task = build_task(recipe(tmp_path, "vacgan", options="{class_code: thesis}"))
    assert task.num_classes == 10 and task.z_dim == 32 and task.noise_dim == 32
    noise = torch.randn(40, 32, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(40) % 10
    z = task.encode_class(noise, labels)
    assert z.shape == (40, 32)
    sign = torch.full((40, 10), -1.0)
    sign[torch.arange(40), labels] = 1.0
    assert torch.equal(z[:, :10], noise[:, :10].abs() * sign)  # +|u_c|, -|u_j| for j != c
    assert torch.equal(z[:, 10:], noise[:, 10:])                 # the rest stays as drawn
    assert torch.equal(z[:, :10].argmax(1), labels)


def test_thesis_class_code_two_classes_is_the_sign_of_z0(tmp_path):
    task = build_task(recipe(tmp_path, "vacbegan", k=1))  # one sigmoid output: two classes
    assert task.num_classes == 2
    noise = torch.rand(6, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    labels = torch.tensor([0, 1, 0, 1, 1, 0])
    z = task.encode_class(noise, labels)
    assert torch.equal(z[:, 0], torch.where(labels == 0, noise[:, 0].abs(), -noise[:, 0].abs()))
    assert torch.equal(z[:, 1:], noise[:, 1:])
    # samples.png: 100 samples in class order, 2 classes -> 10 columns, 5 rows per class
    assert task.grid_columns(100) == 10 and task.grid_columns(20) == 10


def test_one_hot_code_follows_the_noise(tmp_path):
    task = build_task(recipe(tmp_path, "cgan"))
    assert task.options.class_code == "one_hot" and task.noise_dim == 22
    labels = torch.tensor([3, 0, 9])
    z = task.latent(3, "cpu", labels=labels, generator=torch.Generator().manual_seed(0))
    assert z.shape == (3, 32)
    expect = torch.zeros(3, 10)
    expect[torch.arange(3), labels] = 1.0
    assert torch.equal(z[:, 22:], expect)
    # the sample grid asks for one row per class, in class order
    cond = task.sample_conditions(100, torch.Generator())
    assert torch.equal(cond["labels"], torch.arange(10).repeat_interleave(10))
    assert task.grid_columns(100) == 10  # one row per class


# --------------------------------------------------------------------------------------------
# VAC+GAN: the generator loss, on DCGAN and BEGAN
# --------------------------------------------------------------------------------------------
def vac_generator_grads(tmp_path, alpha: float, beta: float):
    """One VAC+GAN (DCGAN) step: the generator's gradient as the trainer applies it, and the
    adversarial and classifier gradients recomputed independently at that moment."""
    tr = trainer_for(recipe(tmp_path, "vacgan", options=f"{{alpha: {alpha}, beta: {beta}}}"),
                     outdir=tmp_path / "run", progress=False)
    task, G, D, C = tr.task, tr.models["generator"], tr.models["discriminator"], tr.models["classifier"]
    batch = next(iter(torch.utils.data.DataLoader(tr.train_ds, batch_size=16)))
    seen = {}
    latent = task.latent

    def spy_latent(n, device, **kw):
        seen["z"] = z = latent(n, device, **kw)
        return z

    step = tr.backward_step

    def spy_step(loss, name):
        if name == "generator":  # D and C are updated by now; G is not
            z, y, params = seen["z"], batch[1], list(G.parameters())
            fake = G(z)
            adv = F.binary_cross_entropy_with_logits(D(fake), torch.ones(len(z), 1))
            seen["adv"] = torch.autograd.grad(adv, params)
            cls = F.cross_entropy(C(G(z)), y)
            seen["cls"] = torch.autograd.grad(cls, params)
        step(loss, name)
        if name == "generator":
            seen["got"] = [p.grad.clone() for p in G.parameters()]

    task.latent, tr.backward_step = spy_latent, spy_step
    for m in tr.models.values():
        m.train()
    logs = task.training_step(tr, batch)
    assert set(logs) >= {"loss_d", "loss_c", "loss_g_adv", "loss_g_cls", "loss_g"}
    assert math.isclose(logs["loss_g"], alpha * logs["loss_g_adv"] + beta * logs["loss_g_cls"],
                        rel_tol=1e-6)
    return seen


def test_vac_generator_gradient_is_alpha_adversarial_plus_beta_classifier(tmp_path):
    only_cls = vac_generator_grads(tmp_path / "a", alpha=0.0, beta=1.0)
    for got, want in zip(only_cls["got"], only_cls["cls"]):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    only_adv = vac_generator_grads(tmp_path / "b", alpha=1.0, beta=0.0)
    for got, want in zip(only_adv["got"], only_adv["adv"]):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    both = vac_generator_grads(tmp_path / "c", alpha=0.2, beta=0.8)
    for got, a, c in zip(both["got"], both["adv"], both["cls"]):
        torch.testing.assert_close(got, 0.2 * a + 0.8 * c, rtol=1e-5, atol=1e-7)
    # the two terms really differ (else the checks above could not tell them apart)
    assert any(not torch.allclose(a, c) for a, c in zip(both["adv"], both["cls"]))


@pytest.mark.parametrize("task", ["vacgan", "vacbegan"])
def test_vac_mixin_trains_on_dcgan_and_began(tmp_path, task):
    tr = trainer_for(recipe(tmp_path, task, steps=3), outdir=tmp_path / "run", progress=False)
    before = {k: v.clone() for k, v in tr.models["classifier"].state_dict().items()}
    final = tr.run()
    after = tr.models["classifier"].state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the classifier learns
    assert set(tr.optimizers) == {"generator", "discriminator", "classifier"}
    assert tr.task.heads["classifier"] == "softmax"  # read as logits
    for key in ("val_loss_d", "val_loss_g", "val_loss_cls", "val_cls_acc", "val_gen_cls_acc"):
        assert math.isfinite(final[key]), key
    assert 0 <= final["val_cls_acc"] <= 1
    row = next(r for r in tr.history if "train_loss_c" in r)
    assert all(math.isfinite(row[k]) for k in ("train_loss_c", "train_loss_g_cls",
                                               "train_loss_g_adv"))
    if task == "vacbegan":
        assert "train_k" in row and "val_m_global" in final
    if task == "vacgan":  # one row per class
        from skimage.io import imread

        assert imread(tmp_path / "run" / "samples.png").shape[0] > 100


# --------------------------------------------------------------------------------------------
# ACGAN and CGAN
# --------------------------------------------------------------------------------------------
def test_acgan_discriminator_loss_holds_the_class_terms_on_real_and_fake(tmp_path):
    tr = trainer_for(recipe(tmp_path, "acgan"), outdir=tmp_path / "run", progress=False)
    task, G, D = tr.task, tr.models["generator"], tr.models["discriminator"]
    assert task.heads == {"discriminator": "sigmoid", "discriminator_class": "softmax"}
    batch = next(iter(torch.utils.data.DataLoader(tr.train_ds, batch_size=16)))
    x, y = batch
    seen = {}
    latent, step = task.latent, tr.backward_step

    def spy_latent(n, device, **kw):
        seen["z"] = z = latent(n, device, **kw)
        seen["labels"] = kw["labels"]
        return z

    def spy_step(loss, name):
        if name == "discriminator":  # D before its update; recompute L_D from its parts
            with torch.no_grad():
                fake = G(seen["z"])
                real_out, fake_out = D(x), D(fake)
            ones, zeros = torch.ones(16, 1), torch.zeros(16, 1)
            src = (F.binary_cross_entropy_with_logits(real_out["prob"], ones)
                   + F.binary_cross_entropy_with_logits(fake_out["prob"], zeros))
            cls_real = F.cross_entropy(real_out["class_probs"], y)
            cls_fake = F.cross_entropy(fake_out["class_probs"], y)
            seen["want"] = float(src + cls_real + cls_fake)
            seen["got"] = float(loss.detach())
            # with other labels for the real images the loss would differ
            seen["other"] = float(src + F.cross_entropy(real_out["class_probs"], (y + 1) % 10)
                                  + cls_fake)
        step(loss, name)

    task.latent, tr.backward_step = spy_latent, spy_step
    for m in tr.models.values():
        m.train()
    logs = task.training_step(tr, batch)
    assert torch.equal(seen["labels"], y)  # fakes take the real batch's labels
    assert math.isclose(seen["got"], seen["want"], rel_tol=1e-5)
    assert not math.isclose(seen["got"], seen["other"], rel_tol=1e-3)
    assert 0 <= logs["cls_acc"] <= 1 and math.isfinite(logs["loss_g_cls"])


def test_acgan_class_head_learns_the_real_labels(tmp_path):
    tr = trainer_for(recipe(tmp_path, "acgan", steps=40, extra=["data.train_size=256",
                                                                "data.val_size=64"]),
                     outdir=tmp_path / "run", progress=False)
    final = tr.run()
    assert final["val_cls_acc"] > 0.3, final  # chance: 0.1 (0.5-0.56 over seeds 3-5)


def test_cgan_discriminator_reads_the_label(tmp_path):
    tr = trainer_for(recipe(tmp_path, "cgan", steps=2), outdir=tmp_path / "run", progress=False)
    D = tr.models["discriminator"].eval()
    x = tr.val_ds[0][0].unsqueeze(0)
    with torch.no_grad():
        outs = [float(tr.task.discriminate(D, x, torch.tensor([c]))) for c in range(10)]
    assert len(set(outs)) == 10  # only the label changed
    emb = tr.models["discriminator"].state_dict()["embed.weight"].clone()
    final = tr.run()
    assert not torch.equal(emb, tr.models["discriminator"].state_dict()["embed.weight"])
    assert math.isfinite(final["val_loss_d"]) and math.isfinite(final["val_mmd"])


def test_cbegan_conditions_only_the_latent(tmp_path):
    tr = trainer_for(recipe(tmp_path, "cbegan", steps=2), outdir=tmp_path / "run",
                     progress=False)
    assert tr.task.num_classes == 10 and tr.task.options.class_code == "thesis"
    assert [i.name for i in tr.netspecs["discriminator"].inputs] == ["image"]
    batch = (torch.zeros(3, 1, 8, 8), torch.tensor([4, 1, 7]))
    assert torch.equal(tr.task.batch_conditions(batch)["labels"], batch[1])
    final = tr.run()
    assert math.isfinite(final["val_m_global"])


# --------------------------------------------------------------------------------------------
# bad input: one line, naming the field
# --------------------------------------------------------------------------------------------
def one_line_error(exc: pytest.ExceptionInfo, field: str, *words: str) -> None:
    text = str(exc.value)
    assert "\n" not in text and exc.value.field == field, text
    for w in words:
        assert w in text, text


def test_conditional_recipe_on_data_without_labels(tmp_path, monkeypatch):
    import spdnn.data.images as images

    def unlabelled(data, shape):
        x = torch.rand(8, *shape)
        ds = images.TensorImages(x, torch.zeros(8, dtype=torch.long), ["all"])
        return ds, ds

    monkeypatch.setattr(images, "image_datasets", unlabelled)
    for task in ("vacgan", "cbegan"):
        with pytest.raises(SpecError) as exc:
            trainer_for(recipe(tmp_path / task, task), outdir=tmp_path / task / "run",
                        progress=False)
        one_line_error(exc, "data.source", "at least two classes", "has 1")


@pytest.mark.parametrize("task, field", [
    ("vacgan", "models.classifier"), ("cgan", "models.discriminator"),
    ("acgan", "models.discriminator"), ("vacbegan", "models.classifier")])
def test_network_class_count_differs_from_the_data(tmp_path, task, field):
    with pytest.raises(SpecError) as exc:
        trainer_for(recipe(tmp_path, task, k=5), outdir=tmp_path / "run", progress=False)
    one_line_error(exc, field, "built for 5 classes", "has 10")
    assert not (tmp_path / "run" / "last.pt").exists()


@pytest.mark.parametrize("task, options", [("vacgan", "{class_code: thesis}"),
                                           ("cgan", "{class_code: one_hot}")])
def test_latent_too_small_for_the_class_code(tmp_path, task, options):
    g = write(tmp_path, "small_g", SMALL_G)
    with pytest.raises(SpecError) as exc:
        build_task(recipe(tmp_path, task, generator=g, options=options))
    one_line_error(exc, "models.generator", "10")


def test_bad_conditional_networks_and_options(tmp_path):
    with pytest.raises(SpecError) as exc:  # CGAN's D must read the label
        build_task(recipe(tmp_path, "cgan", discriminator=DCGAN_D))
    one_line_error(exc, "models.discriminator", "second input")
    with pytest.raises(SpecError) as exc:  # ACGAN's D needs its class head
        build_task(recipe(tmp_path, "acgan", discriminator=DCGAN_D))
    one_line_error(exc, "models.discriminator", "two outputs")
    with pytest.raises(SpecError) as exc:
        build_task(recipe(tmp_path, "vacgan", options="{alpha: 0, beta: 0}"))
    one_line_error(exc, "options", "both 0")
    with pytest.raises(SpecError) as exc:
        build_task(recipe(tmp_path, "vacgan", options="{gamma: 0.5}"))  # a BEGAN option
    one_line_error(exc, "options.gamma")


# --------------------------------------------------------------------------------------------
# exact resume with three optimizers and k_t
# --------------------------------------------------------------------------------------------
def test_vacbegan_resumes_bit_exactly(tmp_path):
    def state(tr):
        out = {f"{n}.{k}": v.clone() for n, m in tr.models.items()
               for k, v in m.state_dict().items()}
        for n, o in tr.optimizers.items():
            for pid, st in o.state_dict()["state"].items():
                out.update({f"opt.{n}.{pid}.{k}": torch.as_tensor(v).clone()
                            for k, v in st.items()})
        return out

    r = recipe(tmp_path, "vacbegan", steps=4, options="{lambda_k: 0.5}",
               extra=["models.generator.ema=0.9"])
    full = trainer_for(r, outdir=tmp_path / "full", progress=False)
    final_full = full.run()
    part = trainer_for(r, outdir=tmp_path / "part", progress=False, stop_after=2)
    part.run()
    assert part.step == 2 and part.task.k > 0  # k_t has moved (lambda_k 0.5)
    resumed = trainer_for(r, outdir=tmp_path / "part", progress=False, resume=True)
    final_resumed = resumed.run()
    assert resumed.step == 4 and resumed.task.k == full.task.k
    a, b = state(full), state(resumed)
    assert a.keys() == b.keys() and any(k.startswith("opt.classifier") for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    for n in full.ema:
        for k, v in full.ema[n].state_dict().items():
            assert torch.equal(v, resumed.ema[n].state_dict()[k]), (n, k)
    assert final_full == final_resumed
