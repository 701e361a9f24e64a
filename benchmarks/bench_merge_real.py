"""Does an SPDNN merge beat its parents on real data at the same budget? (issue 24 part 4)

Families of published-style architectures, none of them the thesis' iris/depth parents, on real
Fashion-MNIST (the Debian package ``dataset-fashion-mnist``, 28x28 gray, 10 classes):

* ``classifiers``: LeNet-5 (netspecs/standard/lenet5.yaml), Smart Augmentation's network B
  (netspecs/smart_augmentation/network_b_28_10class.yaml), a two-block VGG-style net
  (netspecs/merge_bench/vgg2_28.yaml);
* ``resnet``: ResNet-8 and ResNet-14 of He et al.'s CIFAR design at widths 8/16/32
  (netspecs/merge_bench/resnet{8,14}_w8_28.yaml);
* ``mobile``: a small MobileNetV2 (netspecs/merge_bench/mobilenetv2_mini_28.yaml) with
  ResNet-8 (the issue's ResNet-18 + MobileNetV2 pair, reduced);
* the iris App. A family is cited from benchmarks/results/compare_iris_a.json and
  weight_merge.json, not retrained.

Rows per family, each trained with recipes/classifier/fashion_merge_bench.yaml (same steps,
batch, optimiser) for every seed: each parent; the like-each SPDNN merge (``spdnn.graph.merge``,
so a rerun uses whatever channel budget spdnn has then) trained from scratch; the controls: the
parents' logit-averaged ensemble (no training beyond the parents) and the best parent (by
validation error) with its widths scaled to the merge's MACs; and the row only spdnn can
produce: the trained parents merged with their weights (``merge_with_weights``, params sum:
the ensemble as one network), pruned to like-each (``spdnn.graph.prune.prune_to``) and
fine-tuned. Test error on the 10,000 held-out images (mean +- sd over seeds), parameters,
MACs (``spdnn.shapes.infer``), latency (``spdnn.bench``: float32, batch 1, one thread, torch
eager inference mode and onnxruntime).

    python benchmarks/bench_merge_real.py --family classifiers   # ~25 min on 2 shared cores
    python benchmarks/bench_merge_real.py --family resnet        # ~15 min
    python benchmarks/bench_merge_real.py --family mobile        # ~20 min
    python benchmarks/bench_merge_real.py                        # every family, ~1 h
    python benchmarks/bench_merge_real.py --quick                # 3 steps a row (smoke, ~1 min)

Resumable: every finished row is a line of ``<out>/merge_real[_quick]_rows.jsonl`` keyed by a
hash of its configuration (netspec, recipe, steps, seed, and the keys of the rows it starts
from), its weights under ``--work``; a rerun recomputes only rows whose configuration changed
(a new channel budget changes the merged netspecs, so only the merge-dependent rows rerun).
Writes ``<out>/merge_real[_quick].md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "classifier" / "fashion_merge_bench.yaml"
NS = ROOT / "netspecs"
FAMILIES = {
    "classifiers": [NS / "standard/lenet5.yaml", NS / "smart_augmentation/network_b_28_10class.yaml",
                    NS / "merge_bench/vgg2_28.yaml"],
    "resnet": [NS / "merge_bench/resnet8_w8_28.yaml", NS / "merge_bench/resnet14_w8_28.yaml"],
    "mobile": [NS / "merge_bench/mobilenetv2_mini_28.yaml", NS / "merge_bench/resnet8_w8_28.yaml"],
}
TITLES = {"classifiers": "(a) small classifiers: LeNet-5, Smart Augmentation network B, "
                         "two-block VGG-style",
          "resnet": "(b) residual: ResNet-8 and ResNet-14 (CIFAR design, widths 8/16/32)",
          "mobile": "(b) mobile: small MobileNetV2 and ResNet-8"}
FAMILY_STEPS = {"classifiers": 1500, "resnet": 1000, "mobile": 800}
"""Full-run training steps a row, per family: each family's full run fits ~30 min of 2 shared
cores (the merged networks of the residual and mobile families train 2-3x slower a step)."""
FULL = {"steps": 1500, "train": 58000, "val": 2000, "test": 10000, "eval_every": 250}
QUICK = {"steps": 3, "train": 500, "val": 200, "test": 500, "eval_every": 3}
WIDTH_FIELDS = {"Conv2d": "out_channels", "Linear": "out_features", "BasicBlock": "planes",
                "BasicBlockDown": "planes", "InvertedResidual": "c", "InvertedResidualRes": "c",
                "InvertedResidualT1": "c"}


# --------------------------------------------------------------------------------------------
# hashing and the row cache
# --------------------------------------------------------------------------------------------
def _hash(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def spec_hash(spec) -> str:
    """A hash of the network a netspec describes (its layers, not its file or name)."""
    data = spec.to_data()
    data.pop("name", None)
    data.pop("description", None)
    return _hash(data)


class Rows:
    """The resumable row cache: one JSON object a line, keyed by ``key``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: dict[str, dict] = {}
        if path.is_file():
            for line in path.read_text().splitlines():
                if line.strip():
                    r = json.loads(line)
                    self.rows[r["key"]] = r

    def get(self, key: str) -> dict | None:
        return self.rows.get(key)

    def put(self, row: dict) -> dict:
        self.rows[row["key"]] = row
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        return row


# --------------------------------------------------------------------------------------------
# training and evaluation
# --------------------------------------------------------------------------------------------
class Bench:
    def __init__(self, args) -> None:
        from spdnn.train import load_recipe

        self.args = args
        self.cfg = dict(QUICK if args.quick else FULL)
        if args.steps:
            self.cfg["steps"] = args.steps
        self.suffix = "_quick" if args.quick else ""
        self.rows = Rows(args.out / f"merge_real{self.suffix}_rows.jsonl")
        c = self.cfg
        self.overrides = [f"steps={c['steps']}", f"eval_every={c['eval_every']}",
                          f"checkpoint_every={c['steps']}", f"data.train_size={c['train']}",
                          f"data.val_size={c['val']}", "log_every=1000"]
        self.recipe = load_recipe(RECIPE, self.overrides)
        self._test = None

    def steps(self, family: str) -> int:
        """Training steps a row of ``family``: ``--steps``, else 3 with ``--quick``, else
        :data:`FAMILY_STEPS`."""
        if self.args.steps or self.args.quick:
            return self.cfg["steps"]
        return FAMILY_STEPS[family]

    def recipe_hash(self, steps: int) -> str:
        """A hash of the recipe at ``steps`` training steps, with the test split size."""
        r = self.recipe.model_copy(update={"steps": steps, "checkpoint_every": steps})
        return _hash({"recipe": r.model_dump(mode="json", exclude={"name", "output"}),
                      "test": self.cfg["test"]})

    # data -----------------------------------------------------------------------------------
    def test_set(self):
        if self._test is None:
            from spdnn.data.images import test_dataset

            self._test = test_dataset(self.recipe.data, (1, 28, 28), self.cfg["test"])
        return self._test

    def val_set(self):
        from spdnn.data.images import image_datasets

        return image_datasets(self.recipe.data, (1, 28, 28))[1]

    # one trained network ----------------------------------------------------------------------
    def train(self, spec, seed: int, key: str, steps: int, lr: float | None = None,
              init: dict | None = None) -> dict:
        """Train ``spec`` (from ``init`` when given) with the benchmark's recipe and ``seed``;
        the best-validation weights are kept in ``<work>/<key>/weights.pt``. Returns them."""
        from spdnn.io import BEST, load_checkpoint, save_torch_atomic
        from spdnn.tasks import build_task
        from spdnn.train.trainer import Trainer

        done = self.args.work / key / "weights.pt"
        if done.is_file():
            return torch.load(done, weights_only=True)
        upd = {"seed": seed, "steps": steps, "checkpoint_every": steps,
               "eval_every": max(1, min(self.cfg["eval_every"], steps))}
        recipe = self.recipe.model_copy(update=upd)
        if lr is not None:
            recipe = recipe.model_copy(update={"optim": recipe.optim.model_copy(update={"lr": lr})})
        run = self.args.work / key / "run"
        shutil.rmtree(run, ignore_errors=True)
        task = build_task(recipe, {"net": spec})
        tr = Trainer(task, outdir=run, quiet=True, progress=False)
        if init is not None:
            tr.models["net"].load_state_dict(init)
        tr.run()
        state = load_checkpoint(run, prefer=BEST)["models"]["net"]
        state = {k: v.detach().cpu().clone() for k, v in state.items()}
        save_torch_atomic(state, done, what="weights")
        shutil.rmtree(run, ignore_errors=True)
        return state

    def errors(self, net) -> dict:
        from spdnn.tasks.classifier import evaluate_classifier

        return {"test_error": evaluate_classifier(net, self.test_set())["error"],
                "val_error": evaluate_classifier(net, self.val_set())["error"]}

    def weights_path(self, key: str) -> Path:
        return self.args.work / key / "weights.pt"


def _net(spec, state):
    from spdnn.codegen import build_module

    net = build_module(spec)
    net.load_state_dict(state)
    return net.eval()


class Ensemble(torch.nn.Module):
    """The parents' logit-averaged ensemble (every parent here ends in linear logits, so this
    is :func:`spdnn.graph.weights.ensemble_forward`)."""

    def __init__(self, nets) -> None:
        super().__init__()
        self.nets = torch.nn.ModuleList(nets)

    def forward(self, x):
        return torch.stack([n(x) for n in self.nets]).mean(0)


def widened(spec, macs_goal: int):
    """``spec`` with every hidden width (conv channels, hidden dense units, block widths)
    scaled by one factor, found by bisection so the MACs come closest to ``macs_goal``; the
    output layer keeps its width. Returns ``(netspec, factor)``."""
    from spdnn.shapes import infer
    from spdnn.spec import from_data

    outs = {o.from_ for o in spec.outputs}
    base = spec.to_data()

    def at(s: float):
        data = json.loads(json.dumps(base))
        for lay in data["layers"]:
            f = WIDTH_FIELDS.get(lay.get("op"))
            if f and f in lay and lay["name"] not in outs and isinstance(lay[f], int):
                lay[f] = max(1, round(lay[f] * s))
        data["name"] = f"{spec.name}_x{s:.2f}"
        return from_data(data, file=f"<{spec.name} widened>")

    lo, hi = 0.1, 8.0
    for _ in range(40):
        mid = math.sqrt(lo * hi)
        if infer(at(mid)).macs > macs_goal:
            hi = mid
        else:
            lo = mid
    best = min((lo, hi), key=lambda s: abs(infer(at(s)).macs - macs_goal))
    return at(best), best


# --------------------------------------------------------------------------------------------
# one family
# --------------------------------------------------------------------------------------------
def run_family(b: Bench, family: str, seeds: list[int]) -> dict:
    from spdnn.graph import merge
    from spdnn.shapes import infer
    from spdnn.spec import load

    paths = FAMILIES[family]
    specs = [load(p) for p in paths]
    infos = [infer(s) for s in specs]
    merged = merge(specs, params="like-each")
    mspec, minfo = merged.spec, infer(merged.spec)
    target = merged.report.target_params or round(sum(i.params for i in infos) / len(infos))
    nets: dict[str, dict] = {}  # row name -> {"spec", "what"} for the latency table
    steps = b.steps(family)
    rhash = b.recipe_hash(steps)
    out: dict = {"family": family, "parents": [s.name for s in specs], "target": target,
                 "steps": steps, "finetune_steps": max(1, steps // b.args.prune_rounds),
                 "merge_notes": merged.report.notes, "seeds": seeds, "rows": {}}
    log = print if not b.args.quiet else (lambda *a, **k: None)

    def record(name: str, seed: int, key: str, compute) -> dict:
        from spdnn.errors import SpdnnError

        row = b.rows.get(key)
        if row is None:
            t0 = time.perf_counter()
            row = {"key": key, "family": family, "row": name, "seed": seed}
            try:
                row.update(compute())
            except SpdnnError as e:  # a row spdnn cannot produce today: say why (not cached,
                # so a rerun with a fixed spdnn produces it), go on
                row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
            row["wall_s"] = round(time.perf_counter() - t0, 1)
            if "error" not in row:
                b.rows.put(row)
            log(f"[{family}] {name} seed {seed}: " + (row.get("error") or
                f"test error {100 * row['test_error']:.2f}%") + f" ({row['wall_s']} s)", flush=True)
        out["rows"].setdefault(name, []).append(row)
        return row

    def trained(name, spec, seed, extra=None, **kw):
        key = _hash({"kind": "train", "spec": spec_hash(spec), "seed": seed, "recipe": rhash,
                     **(extra or {})})

        def compute():
            st = b.train(spec, seed, key, steps, **kw)
            info = infer(spec)
            return {"params": info.params, "macs": info.macs, **b.errors(_net(spec, st))}

        return key, record(name, seed, key, compute)

    parent_keys: dict[int, list[str]] = {}
    for seed in seeds:
        for s in specs:
            k, _ = trained(s.name, s, seed)
            parent_keys.setdefault(seed, []).append(k)
            nets[s.name] = {"specs": [s], "kind": "single"}
        trained("merged like-each (scratch)", mspec, seed)
        nets["merged like-each (scratch)"] = {"specs": [mspec], "kind": "single"}

        ens_key = _hash({"kind": "ensemble", "parents": parent_keys[seed]})

        def ensemble(seed=seed):
            states = [torch.load(b.weights_path(k), weights_only=True) for k in parent_keys[seed]]
            return {"params": sum(i.params for i in infos), "macs": sum(i.macs for i in infos),
                    **b.errors(Ensemble([_net(s, st) for s, st in zip(specs, states)]).eval())}

        record("parents' ensemble (logit mean)", seed, ens_key, ensemble)
    nets["parents' ensemble (logit mean)"] = {"specs": specs, "kind": "sequential"}

    # the best parent (mean validation error over the seeds) widened to the merge's MACs
    val = {s.name: statistics.fmean(r["val_error"] for r in out["rows"][s.name]) for s in specs}
    best_i = min(range(len(specs)), key=lambda i: val[specs[i].name])
    wspec, factor = widened(specs[best_i], minfo.macs)
    wname = f"best parent ({specs[best_i].name}) widened x{factor:.2f} to the merge's MACs"
    out["best_parent"], out["widen_factor"] = specs[best_i].name, factor
    for seed in seeds:
        trained(wname, wspec, seed)
    nets[wname] = {"specs": [wspec], "kind": "single"}

    # the row only spdnn can produce: the trained parents merged with their weights (sum),
    # pruned to like-each and fine-tuned
    rounds, ft_steps = b.args.prune_rounds, max(1, steps // b.args.prune_rounds)
    carried_at: dict[int, tuple] = {}

    def carried_merge(seed: int) -> tuple:
        """``(MergeResult, CarriedMerge)`` of the parents of ``seed`` with their weights."""
        from spdnn.graph.weights import merge_with_weights

        if seed not in carried_at:
            carried_at[seed] = merge_with_weights(paths, [b.weights_path(k)
                                                          for k in parent_keys[seed]])
        return carried_at[seed]

    for seed in seeds:
        wkey = _hash({"kind": "exact", "parents": parent_keys[seed]})

        def carried(seed=seed):
            car = carried_merge(seed)[1]
            return {"params": car.params, "nonzero": car.nonzero_params,
                    "macs": infer(car.spec).macs, "exact": bool(car.exact),
                    "max_abs_err": car.max_abs_err, "notes": car.notes,
                    **b.errors(_net(car.spec, car.state_dict))}

        r = record("exact init (weights carried, params sum)", seed, wkey, carried)
        if seed == seeds[0] and "error" not in r:
            nets["exact init (weights carried, params sum)"] = {
                "specs": [carried_merge(seed)[1].spec], "kind": "single"}
        pkey = _hash({"kind": "pruned", "from": wkey, "target": target, "rounds": rounds,
                      "ft_steps": ft_steps, "lr": b.args.finetune_lr, "recipe": rhash})
        pname = "exact init pruned to like-each + fine-tuned"

        def pruned(seed=seed, pkey=pkey):
            from spdnn.graph.prune import prune_to

            res, car = carried_merge(seed)
            frozen = {res.letters[n] for n in res.rebuild.freed}
            spec, st = car.spec, car.state_dict
            have = car.params
            for r_ in range(1, rounds + 1):
                goal = round(have * (target / have) ** (r_ / rounds))
                spec, st = prune_to(spec, st, goal, frozen)
                st = b.train(spec, seed, f"{pkey}_r{r_}", steps=ft_steps, lr=b.args.finetune_lr,
                             init=st)
            info = infer(spec)
            widths = {lay.name: lay.out_channels for lay in spec.layers
                      if lay.op_name == "Conv2d"}
            (b.args.work / f"{pkey}_spec.json").write_text(json.dumps(spec.to_data()))
            return {"params": info.params, "macs": info.macs, "conv_widths": widths,
                    **b.errors(_net(spec, st))}

        r = record(pname, seed, pkey, pruned)
        if "error" not in r and pname not in nets:
            from spdnn.spec import from_data

            data = json.loads((b.args.work / f"{pkey}_spec.json").read_text())
            nets[pname] = {"specs": [from_data(data, file="<pruned>")], "kind": "single"}
    out["latency"] = latency(b, family, nets)
    out["merged"] = {"params": minfo.params, "macs": minfo.macs,
                     "widths": {lay.name: getattr(lay, WIDTH_FIELDS.get(lay.op_name, "_"), None)
                                for lay in mspec.layers if lay.op_name in WIDTH_FIELDS}}
    return out


def latency(b: Bench, family: str, nets: dict) -> dict:
    """Batch-1 float32 latency (ms, p50) of every row's network on one thread, torch eager
    (inference mode) and onnxruntime (CPU provider), timed interleaved by ``spdnn.bench``;
    cached by the netspecs' hashes."""
    from spdnn.bench import Target, bench

    runtimes = ("torch-inference",) if b.args.quick else ("torch-inference", "ort")
    min_time = 0.05 if b.args.quick else 1.0
    key = _hash({"kind": "latency", "nets": {n: [spec_hash(s) for s in v["specs"]]
                                             for n, v in nets.items()},
                 "runtimes": runtimes, "min_time": min_time})
    row = b.rows.get(key)
    if row is None:
        targets = {n: Target(n, v["specs"], v["kind"]) for n, v in nets.items()}
        res: dict = {}
        for r in bench(targets, batches=[1], runtimes=runtimes, threads=1, min_time=min_time,
                       rounds=3 if b.args.quick else 5):
            res.setdefault(r.model, {})[r.runtime] = r.p50_ms if r.ok else None
        row = b.rows.put({"key": key, "family": family, "row": "latency", "ms": res})
    return row["ms"]


# --------------------------------------------------------------------------------------------
# the table
# --------------------------------------------------------------------------------------------
def _stats(rows: list[dict], field: str = "test_error") -> tuple[float, float, int] | None:
    v = [100 * r[field] for r in rows if field in r and "error" not in r]
    if not v:
        return None
    return statistics.fmean(v), (statistics.stdev(v) if len(v) > 1 else 0.0), len(v)


def _fmt_err(st) -> str:
    return "n/a" if st is None else f"{st[0]:.2f} +- {st[1]:.2f}"


def _compare(a, b) -> tuple[str, float, float]:
    """(word, difference a - b, combined sd) for test errors ``a``, ``b`` (mean, sd, n)."""
    d = a[0] - b[0]
    spread = math.hypot(a[1], b[1])
    word = "is within noise of" if abs(d) <= spread else ("beats" if d < 0 else "loses to")
    return word, d, spread


def family_section(fam: dict, cfg: dict) -> list[str]:
    rows, lat = fam["rows"], fam["latency"]
    lines = [f"## {TITLES[fam['family']]}", "",
             f"{fam['steps']} training steps of batch 64 a row "
             f"({fam['steps'] * 64 / cfg['train']:.1f} epochs); pruning: {fam['finetune_steps']} "
             f"fine-tuning steps a round. Like-each target {fam['target']:,} parameters; merged network "
             f"{fam['merged']['params']:,} parameters, {fam['merged']['macs']:,} MACs; merged "
             f"widths {fam['merged']['widths']}.", "",
             "| row | params | MACs | latency ms torch / ort | test error % (mean +- sd) | seeds |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, rs in rows.items():
        ok = [r for r in rs if "error" not in r]
        st = _stats(rs)
        if ok:
            p = ok[0]["params"]
            params = f"{p:,}" + (f" ({ok[0]['nonzero']:,} nonzero)" if "nonzero" in ok[0] else "")
            macs = f"{ok[0]['macs']:,}"
        else:
            params = macs = "-"
        ms = lat.get(name, {})
        lt = " / ".join("-" if ms.get(k) is None else f"{ms[k]:.3f}"
                        for k in ("torch-inference", "ort"))
        err = _fmt_err(st) if ok else "n/a: " + rs[0]["error"].replace("|", "/")[:160]
        lines.append(f"| {name} | {params} | {macs} | {lt} | {err} | {len(ok)} |")
    # verdicts
    parents = fam["parents"]
    pst = {p: _stats(rows[p]) for p in parents}
    best = min(parents, key=lambda p: pst[p][0])
    m = _stats(rows["merged like-each (scratch)"])
    word, d, spread = _compare(m, pst[best])
    ens = _stats(rows["parents' ensemble (logit mean)"])
    wname = next(n for n in rows if n.startswith("best parent"))
    wid = _stats(rows[wname])
    pname = "exact init pruned to like-each + fine-tuned"
    pr = _stats(rows.get(pname, []))
    ex = [r for r in rows.get("exact init (weights carried, params sum)", []) if "error" not in r]
    outcome = ("won" if word == "beats" else "lost" if word == "loses to" else
               "won only within noise" if d < 0 else "did not win (within noise)")
    verdict = (f"SPDNN {outcome}: the like-each merge "
               f"({fam['merged']['params']:,} parameters) {word} the best parent {best} "
               f"({m[0]:.2f}% vs {pst[best][0]:.2f}% test error, difference {d:+.2f} points, "
               f"seeds' spread {spread:.2f})")
    w2, d2, _ = _compare(m, ens)
    w3, d3, _ = _compare(m, wid)
    lines += ["", f"**Verdict.** {verdict}; against the controls it {w2} the parents' ensemble "
              f"({ens[0]:.2f}%, {d2:+.2f}) and {w3} the best parent widened to its MACs "
              f"({wid[0]:.2f}%, {d3:+.2f})."]
    if pr is not None:
        w4, d4, _ = _compare(pr, m)
        cw = next((r["conv_widths"] for r in rows[pname] if "conv_widths" in r), {})
        lines.append(f"The exact-init merge pruned to like-each and fine-tuned {w4} the merge "
                     f"trained from scratch ({pr[0]:.2f}% vs {m[0]:.2f}%, {d4:+.2f}); "
                     f"`prune_to` prunes convolutions only, to widths {cw} (seed "
                     f"{rows[pname][0]['seed']}), dense layers keep theirs.")
    else:
        e = next((r["error"] for r in rows.get(pname, []) if "error" in r), "not run")
        lines.append(f"The pruned exact-init row could not be produced: {e}.")
    if ex:
        errs = [r["max_abs_err"] for r in ex if r.get("max_abs_err") is not None]
        lines.append(f"The weight-carried merge is {'the exact' if all(r['exact'] for r in ex) else 'NOT the exact'} "
                     f"ensemble (max |merged - ensemble| on random inputs "
                     f"{max(errs) if errs else float('nan'):.1e}"
                     + (f"; {ex[0]['notes'][0]}" if ex[0].get("notes") else "") + ").")
    notes = fam.get("merge_notes") or []
    if notes:
        lines.append(f"Merge report notes: {len(notes)}; first: {notes[0]}")
    return lines + [""]


def iris_section() -> list[str]:
    """Family (c), cited from the iris App. A benchmarks (not retrained)."""
    res = ROOT / "benchmarks" / "results"
    lines = ["## (c) iris App. A (cited, not retrained)", ""]
    try:
        rows = json.loads((res / "compare_iris_a.json").read_text())
        lines += ["From `benchmarks/results/compare_iris_a.md` (synthetic iris stand-in, one "
                  "seed, 300 steps, validation metrics):", "",
                  "| network | params | MACs | accuracy | F1 | MCC |", "|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['name']} | {r['params']:,} | {r['macs']:,} | {r['val_accuracy']:.4f} | "
                  f"{r['val_f1']:.4f} | {r['val_mcc']:.4f} |" for r in rows]
        best = max((r for r in rows if "parent" in r["name"]), key=lambda r: r["val_mcc"])
        m = next(r for r in rows if "merged" in r["name"])
        lines += ["", f"**Verdict (cited).** The like-each merge beats the best parent there "
                  f"(MCC {m['val_mcc']:.4f} vs {best['val_mcc']:.4f}), one seed only, so its "
                  "spread is unknown; see `weight_merge.md` for the ensemble and the pruned "
                  "exact-init rows of the same family."]
    except (OSError, KeyError, StopIteration, ValueError) as e:
        lines.append(f"compare_iris_a.json unreadable: {e}")
    return lines + [""]


def write(b: Bench, fams: list[dict], wall: float) -> str:
    from spdnn.io import write_atomic

    c = b.cfg
    seeds = sorted({s for f in fams for s in f["seeds"]})
    lines = ["# Real-data SPDNN merge benchmark (issue 24 part 4)", "",
             f"Data: real Fashion-MNIST (Debian `dataset-fashion-mnist`, 28x28 gray, 10 "
             f"classes), its 70,000 images pooled and split stratified (data seed 0) into "
             f"{c['train']:,} training, {c['val']:,} validation and {c['test']:,} test images "
             f"(disjoint). Recipe `recipes/classifier/fashion_merge_bench.yaml` for every "
             f"network: Adam lr 0.001 with cosine decay, batch 64, the steps a row of each "
             f"family below, the best-validation checkpoint "
             f"tested; seeds {seeds} (init and batch order; one data split). Budget of the "
             f"merge: `like-each` (mean of the parents' parameters), by today's "
             f"`spdnn.graph.merge`. Controls: the parents' logit-averaged ensemble (no "
             f"training beyond the parents) and the best parent by validation error with all "
             f"hidden widths scaled by one factor to the merge's MACs. Exact init: the trained "
             f"parents of the same seed merged with their weights (params sum), pruned to "
             f"like-each in {b.args.prune_rounds} rounds of L1 filter pruning "
             f"(`spdnn.graph.prune.prune_to`, convolutions only), each fine-tuned "
             f"half the family's steps at lr {b.args.finetune_lr:g}. "
             f"Latency: float32, batch 1, one thread, p50 (spdnn.bench; torch eager inference "
             f"mode / onnxruntime CPU). Error sd: over seeds; \"within noise\" = the difference "
             f"is at most the combined sd. Wall time of the rows: "
             f"{sum(r.get('wall_s', 0) for f in fams for rs in f['rows'].values() for r in rs) / 60:.1f}"
             f" min in all (1 thread, 2 cores shared with other sessions; a rerun from the cache took "
             f"{wall / 60:.1f} min).", ""]
    for f in fams:
        lines += family_section(f, c)
    lines += iris_section()
    text = "\n".join(lines) + "\n"
    write_atomic(b.args.out / f"merge_real{b.suffix}.md", text)
    write_atomic(b.args.out / f"merge_real{b.suffix}.json",
                 json.dumps({"config": c, "families": fams}, indent=1, default=str))
    if fams and not b.args.quick:
        plot(fams, b.args.out / f"merge_real{b.suffix}.png")
    return text


def plot(fams: list[dict], path: Path) -> None:
    """Test error (mean +- sd over seeds) against MACs, one panel per family."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from spdnn.io import save_figure

    fig, axes = plt.subplots(1, len(fams), figsize=(5.2 * len(fams), 4.0), squeeze=False)
    for ax, fam in zip(axes[0], fams):
        for name, rs in fam["rows"].items():
            st = _stats(rs)
            ok = [r for r in rs if "error" not in r]
            if st is None or not ok:
                continue
            marker = "*" if name.startswith("merged") else "s" if "exact" in name else "o"
            ax.errorbar(ok[0]["macs"], st[0], yerr=st[1], fmt=marker, capsize=3,
                        markersize=10 if marker == "*" else 6, label=name[:48])
        ax.set_xscale("log")
        ax.set_xlabel("MACs per image")
        ax.set_ylabel("test error % (mean +- sd)")
        ax.set_title(TITLES[fam["family"]][:60], fontsize=8)
        ax.legend(fontsize=6)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", choices=list(FAMILIES), action="append",
                    help="run this family only (repeatable; default: all)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--quick", action="store_true", help="3 steps a row on small splits (smoke)")
    ap.add_argument("--steps", type=int, default=None, help="training steps a row")
    ap.add_argument("--prune-rounds", type=int, default=2)
    ap.add_argument("--finetune-lr", type=float, default=0.0005)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "bench_merge_real")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    b = Bench(a)
    wanted = a.family or list(FAMILIES)
    fams = [run_family(b, f, a.seeds) for f in wanted]
    # families run earlier (another --family invocation) join the table from the cache
    for f in FAMILIES:
        if f not in wanted and _cached(b, f, a.seeds):
            fams.append(run_family(b, f, a.seeds))
    fams.sort(key=lambda f: list(FAMILIES).index(f["family"]))
    text = write(b, fams, time.perf_counter() - t0)
    if not a.quiet:
        print(text)
    return 0


def _cached(b: Bench, family: str, seeds: list[int]) -> bool:
    """Whether every trained parent row of ``family`` is cached (then it joins the table)."""
    from spdnn.spec import load

    for p in FAMILIES[family]:
        s = load(p)
        for seed in seeds:
            if b.rows.get(_hash({"kind": "train", "spec": spec_hash(s), "seed": seed,
                                 "recipe": b.recipe_hash(b.steps(family))})) is None:
                return False
    return True


if __name__ == "__main__":
    sys.exit(main())
