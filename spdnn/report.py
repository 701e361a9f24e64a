"""Human-readable merge reports and layer tables (markdown text and rich tables)."""

from __future__ import annotations

from rich.table import Table

from spdnn.graph.label import format_label
from spdnn.graph.merge import MergeReport
from spdnn.shapes import NetInfo


def _n(v: int) -> str:
    return f"{v:,}"


def _shape(s: tuple[int, ...]) -> str:
    return "x".join(map(str, s))


def merge_markdown(r: MergeReport) -> str:
    """The merge report as markdown: sizes, budget, label table, skipped merges, notes."""
    lines = ["# SPDNN merge report", "",
             f"Distance rule: **{r.rule}** path. Channel budget: **{r.target_mode}**"
             + (f" (target {_n(r.target_params)} parameters, got {_n(r.merged_params)}, "
                f"{r.budget_error:+.2%}; width multiplier {r.width_scale:.3f})"
                if r.target_params else " (parents' widths kept)") + ".", "",
             "| network | compute layers | parameters | MACs/sample |", "|---|---:|---:|---:|"]
    for p in r.parents:
        lines.append(f"| {p['name']} | {p['nodes']} | {_n(p['params'])} | {_n(p['macs'])} |")
    lines.append(f"| parents together | {sum(p['nodes'] for p in r.parents)} | "
                 f"{_n(r.parents_params)} | {_n(sum(p['macs'] for p in r.parents))} |")
    lines.append(f"| **merged** | **{r.merged_nodes}** | **{_n(r.merged_params)}** | "
                 f"**{_n(r.merged_macs)}** |")
    lines += ["", f"Parameters: {r.reduction_vs_sum:.1%} fewer than the parents together.",
              _macs_line(r)]
    if r.warnings:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in r.warnings]
    if r.widths:
        lines += ["", "## Widths", "",
                  f"What the channel budget chose (multiplier {r.width_scale:.3f}, decided by "
                  f"{_BINDING[r.binding]}; floor min(parent width, {r.min_width}), multiple of "
                  f"{r.width_multiple}). A node with several letters is a group tied to one "
                  "width (an identity-residual block and its input); 'fan-in' is the channel "
                  "slice a dense layer reads.", "",
                  "| node | parent layers (width) | widest | merged |", "|---|---|---:|---:|"]
        for w in r.widths:
            lines.append(f"| {w['node']} | {_members(w)} | {w['base']} | {w['width']} |")
    lines += ["", "## Labels", "",
              "| node | structure | forward labels | backward label | merged parent layers |",
              "|---|---|---|---|---|"]
    for lab in r.labels:
        fw = ", ".join(format_label(x) for x in lab["forward"])
        lines.append(f"| {lab['letter']} | {lab['structure']} | {fw} | "
                     f"{format_label(lab['backward'])} | {', '.join(lab['members'])} |")
    lines += ["", "## Skipped merges", ""]
    if not r.skipped:
        lines.append("None: every set of equal labels was merged.")
    for s in r.skipped:
        lines.append(f"- {s.stage} {format_label(s.label)}: kept {', '.join(s.kept)} apart from "
                     f"{', '.join(s.other)}: {s.reason}.")
    if r.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in r.notes]
    return "\n".join(lines) + "\n"


_BINDING = {"params": "the parameter target", "macs": "the MAC bound",
            "floor": "the floor (the target is out of reach)",
            "cap": "the parents' widths (no widening below --params sum)",
            "widest": "the widest search limit", "keep": "nothing (parents' widths kept)"}


def _members(w: dict) -> str:
    return ", ".join(f"{m} ({c})" for m, c in w["members"])


def _macs_line(r: MergeReport) -> str:
    bound = f"; bound {_n(r.macs_target)}" if r.macs_target else ""
    ratio = r.merged_macs / max(1, r.max_parent_macs)
    return (f"MACs per sample: {_n(r.merged_macs)}, {ratio:.2f}x the most expensive parent "
            f"({_n(r.max_parent_macs)}){bound}.")


def width_table(r: MergeReport) -> Table:
    """The budget's widths: every budget width (merged node, tied group, dense fan-in) with
    its parent layers' widths, the widest, and the merged width."""
    t = Table(title=f"Widths (multiplier {r.width_scale:.3f}, decided by {_BINDING[r.binding]})",
              title_justify="left")
    for col, just in (("node", "left"), ("parent layers (width)", "left"), ("widest", "right"),
                      ("merged", "right")):
        t.add_column(col, justify=just)
    for w in r.widths:
        t.add_row(w["node"], _members(w), str(w["base"]), str(w["width"]),
                  style="yellow" if w["width"] < min(w["base"], r.min_width) else None)
    return t


def merge_tables(r: MergeReport) -> list[Table]:
    """The merge report as rich tables (sizes, labels, skipped merges)."""
    sizes = Table(title="SPDNN merge", title_justify="left")
    for col, just in (("network", "left"), ("layers", "right"), ("parameters", "right"),
                      ("MACs/sample", "right")):
        sizes.add_column(col, justify=just)
    for p in r.parents:
        sizes.add_row(p["name"], str(p["nodes"]), _n(p["params"]), _n(p["macs"]))
    sizes.add_row("parents together", str(sum(p["nodes"] for p in r.parents)),
                  _n(r.parents_params), _n(sum(p["macs"] for p in r.parents)), style="dim")
    sizes.add_row("merged", str(r.merged_nodes), _n(r.merged_params), _n(r.merged_macs),
                  style="bold green")
    labels = Table(title="Labels (thesis notation)", title_justify="left")
    for col in ("node", "structure", "forward", "backward", "merged from"):
        labels.add_column(col)
    for lab in r.labels:
        labels.add_row(lab["letter"], lab["structure"],
                       ", ".join(format_label(x) for x in lab["forward"]),
                       format_label(lab["backward"]), ", ".join(lab["members"]))
    out = [sizes, labels]
    if r.widths:
        out.append(width_table(r))
    if r.skipped:
        sk = Table(title="Skipped merges", title_justify="left")
        for col in ("stage", "label", "kept", "apart from", "why"):
            sk.add_column(col)
        for s in r.skipped:
            sk.add_row(s.stage, format_label(s.label), ", ".join(s.kept), ", ".join(s.other),
                       s.reason)
        out.append(sk)
    return out


def merge_summary(r: MergeReport) -> list[str]:
    """Short lines under the tables: reduction, budget, notes."""
    lines = [f"{r.reduction_vs_sum:.1%} fewer parameters than the {len(r.parents)} parents "
             f"together ({_n(r.merged_params)} vs {_n(r.parents_params)})."]
    if r.target_params:
        lines.append(f"Channel budget '{r.target_mode}': target {_n(r.target_params)}, got "
                     f"{_n(r.merged_params)} ({r.budget_error:+.2%}).")
    else:
        lines.append("Channel budget 'keep': every merged layer keeps its widest parent width.")
    lines.append(_macs_line(r))
    lines += [f"Warning: {w}" for w in r.warnings]
    lines += [f"Note: {n}" for n in r.notes]
    if not r.skipped:
        lines.append(f"Distance rule '{r.rule}': no merge had to be skipped.")
    return lines


def layer_table(info: NetInfo, title: str | None = None, batch: int | None = None) -> Table:
    """Layers with op, inputs, output shape, parameters and MACs, and totals; for one sample,
    or for a batch of ``batch`` samples (shapes with the batch axis, MACs times ``batch``)."""
    n = batch or 1
    lead = (batch,) if batch else ()
    t = Table(title=title, title_justify="left")
    for col, just in (("layer", "left"), ("op", "left"), ("details", "left"), ("inputs", "left"),
                      ("output", "right"), ("params", "right"), ("MACs", "right")):
        t.add_column(col, justify=just)
    for i in info.spec.inputs:
        t.add_row(i.name, "input", "", "", _shape(lead + tuple(i.shape)), "", "", style="dim")
    for lay in info.layers:
        t.add_row(lay.name, lay.op.op_name, describe(lay.op), ", ".join(lay.inputs),
                  _shape(lead + tuple(lay.out_shape)), _n(lay.params) if lay.params else "",
                  _n(lay.macs * n) if lay.macs else "")
    t.add_section()
    t.add_row("total", "", "", "", "", _n(info.params), _n(info.macs * n), style="bold")
    return t


def layer_json(info: NetInfo, batch: int = 1, file: str | None = None) -> dict:
    """The numbers of :func:`layer_table` as plain data (``spdnn inspect --json``).

    ``{"name", "file", "batch", "inputs": [{"name", "shape"}], "layers": [{"name", "op",
    "details", "inputs", "output_shape", "params", "macs"}], "outputs": [{"name", "from",
    "shape"}], "total": {"params", "macs", "activations"}}``. Shapes are per sample (no batch
    axis); ``macs`` and ``activations`` (values of the inputs and of every layer's output)
    count ``batch`` samples; ``params`` are trainable parameters.
    """
    import math

    inputs = [{"name": i.name, "shape": list(i.shape)} for i in info.spec.inputs]
    layers = [{"name": lay.name, "op": lay.op.op_name, "details": describe(lay.op),
               "inputs": list(lay.inputs), "output_shape": list(lay.out_shape),
               "params": lay.params, "macs": lay.macs * batch} for lay in info.layers]
    values = sum(math.prod(i.shape) for i in info.spec.inputs) + sum(
        math.prod(lay.out_shape) for lay in info.layers)
    return {"name": info.spec.name, "file": file, "batch": batch, "inputs": inputs,
            "layers": layers,
            "outputs": [{"name": o.name, "from": o.from_, "shape": list(info.shapes[o.from_])}
                        for o in info.spec.outputs],
            "total": {"params": info.params, "macs": info.macs * batch,
                      "activations": values * batch}}


def describe(op) -> str:
    """A short description of an op's parameters, e.g. ``k7 s1 BN relu``."""
    data = op.model_dump(exclude_defaults=True, exclude={"name", "op", "inputs", "merged_from"})
    parts = []
    for k, v in data.items():
        short = {"kernel_size": "k", "out_channels": "c", "out_features": "f", "stride": "s",
                 "padding": "pad=", "scale_factor": "x", "dilation": "d"}.get(k)
        if k == "batch_norm" and v:
            parts.append("BN")
        elif k == "activation":
            parts.append(str(v))
        elif short:
            parts.append(f"{short}{v}")
        else:
            parts.append(f"{k}={v}")
    return " ".join(parts)
