"""netspec -> ONNX -> spdnn import -> netspec: the imported netspec keeps the layer names of
every layer with weights, the SPDNN labels (structure, distance from the input; thesis
ch. 3.1), the output shapes and the parameter count, and computes the same outputs with the
carried weights. The ONNX files are written by torch's TorchScript exporter with batch norms
kept (``training=PRESERVE``: a folded batch norm would change the parameter count).

Layer names come back as the compiled module's attribute names (``L11`` -> ``l11``: the
identifiers code generation derives from the names, which is what the ONNX file records).
Block instances come back as their body layers (ONNX has no blocks), so for netspecs with
blocks the labels are not compared (the block's one structure code becomes its layers' codes);
names, parameters, shapes and outputs still are."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxscript")

from spdnn.codegen import build_module  # noqa: E402
from spdnn.codegen.names import layer_identifiers  # noqa: E402
from spdnn.graph import label_forward, to_graph  # noqa: E402
from spdnn.importers import ModelImportError, import_onnx, parity  # noqa: E402
from spdnn.shapes import infer  # noqa: E402
from spdnn.spec import example_inputs, load_checked  # noqa: E402
from spdnn.spec.blocks import netspec_paths  # noqa: E402

ROOT = Path(__file__).resolve().parents[1] / "netspecs"

DEFAULT = ["iris/appendix_a/parent_3_3to11.yaml", "depth/parent_2.yaml",
           "gan/dcgan/digits_generator.yaml", "squeezenet/squeezenet_1_1.yaml"]
"""Fast cases for the default run: convs with fused BN, pools and unpools, transposed convs
and Linear on a vector input, a block netspec (Fire modules, Concat)."""

NOT_IMPORTABLE = {
    "gan/cgan/mnist_discriminator_reduced.yaml": "(Gather)",  # Embedding of the class label
    "gan/dcgan/cifar10_discriminator.yaml": "(Sub)",  # minibatch discrimination
    "generative_sensing/alexnet_small_generative.yaml": "(Slice)",  # channel split
    "spade_sr/spade_64.yaml": "adds a constant tensor",  # SPADE's x * (1 + gamma) + beta
    "spade_sr/spade_128.yaml": "adds a constant tensor",
}
"""Netspecs whose exported graph holds an op with no netspec equivalent at the ONNX level
(the netspec op is exported as primitive ops): the import must fail with one line naming it."""


def labels(spec) -> list[str]:
    g = label_forward(to_graph(spec))
    return sorted(str(d["label"]) for _, d in g.nodes(data=True) if d.get("kind") == "compute")


def _export(spec, path: Path):
    module = build_module(spec).eval()
    for m in module.modules():  # non-trivial batch-norm statistics
        if isinstance(m, torch.nn.BatchNorm2d) and m.affine:
            with torch.no_grad():
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.9, 1.1)
                m.weight.uniform_(0.9, 1.1)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, tuple(example_inputs(spec)), buf, dynamo=False,
                          opset_version=17, training=torch.onnx.TrainingMode.PRESERVE,
                          input_names=[i.name for i in spec.inputs],
                          output_names=[o.name for o in spec.outputs])
    path.write_bytes(buf.getvalue())
    return module


MAX_PARAMS = 15_000_000
"""Larger netspecs (VGG-11: 133M, AlexNet: 61M, ResNet-34: 22M parameters) take 10-100 s each
to export and import on two cores; they run the same code paths as the smaller ones."""


def _round_trip(rel: str, tmp_path: Path) -> None:
    spec = load_checked(ROOT / rel)
    info = infer(spec)
    if info.params > MAX_PARAMS:
        pytest.skip(f"{rel}: {info.params:,} parameters, above the test budget's "
                    f"{MAX_PARAMS:,} (the same code paths run on the smaller netspecs)")
    path = tmp_path / (Path(rel).stem + ".onnx")
    try:
        module = _export(spec, path)
    except Exception as exc:  # noqa: BLE001 - torch's exporter, not the importer
        pytest.skip(f"torch's exporter cannot export {rel}: {str(exc).splitlines()[0][:120]}")
    if rel in NOT_IMPORTABLE:
        with pytest.raises(ModelImportError) as err:
            import_onnx(path)
        assert NOT_IMPORTABLE[rel] in err.value.one_line()
        return
    result = import_onnx(path)
    got = infer(result.spec)
    assert got.params == info.params
    assert list(got.output_shapes().values()) == list(info.output_shapes().values())
    assert [i.shape for i in result.spec.inputs] == [i.shape for i in spec.inputs]
    if not spec.blocks:
        assert labels(result.spec) == labels(spec)
        # the file holds the compiled module's attribute names (safe identifiers of the names)
        _, idents = layer_identifiers(spec)
        weighted = {idents[lay.name] for lay in info.layers if lay.params}
        assert weighted <= {lay.name for lay in result.spec.layers}
    assert max(parity(result, module).values()) <= 1e-5


@pytest.mark.parametrize("rel", DEFAULT)
def test_round_trip(rel, tmp_path):
    _round_trip(rel, tmp_path)


ALL = sorted(str(p.relative_to(ROOT)) for p in netspec_paths(ROOT))


@pytest.mark.slow
@pytest.mark.parametrize("rel", [r for r in ALL if r not in DEFAULT])
def test_round_trip_every_netspec(rel, tmp_path):
    _round_trip(rel, tmp_path)
