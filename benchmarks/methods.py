"""The methods added for pytorch-grad-cam 1.5.7 parity, each timed against pytorch-grad-cam on
the same weights, side by side in one run.

    python -m benchmarks.methods [--batch 8] [--size 224] [--rounds 5] [--budget 60]
        [--methods gradcam,fullgrad,...] [--fullgrad-batch N] [--sess-scales 12] [--seed N]
        [--out benchmarks/results] [--md benchmarks/RESULTS.md]

Issue 15: ``benchmarks/`` records each new method's time against pytorch-grad-cam's on the same
weights. The model is EfficientNet-Lite0 with its shipped ImageNet weights: the Flax port
(``efficientnet_flax.load_pretrained``) for jaxcam, its PyTorch twin
(``efficientnet_flax.torch_twin.TorchEfficientNetLite0``, the same state dict) for
pytorch-grad-cam, set up as ``tests/test_methods_more.py``'s parity tests set them up: the layer
is the last feature map (jaxcam's ``head_conv``: 1x1 conv, BN, ReLU6; 7x7x1280 at 224 px), which
pytorch-grad-cam hooks through a view of the twin whose ``features`` module returns
``extract_features``. RefineCAM adds the last 14x14 block (``blocks/10`` / ``_blocks[10]``);
FullGrad uses every batch norm (no layer); DeepFeatureFactorization runs the classifier on its
concepts.

Images: a seeded batch of blocky random pictures (as the parity tests), normalised as the weights
expect. Targets: each image's top-1 class (from the Flax forward, given to both sides), except
ShapleyCAM (``ClassifierOutputReST`` of image 0's top class for the whole batch, as its parity
test) and FinerCAM (no targets: both pick the top class and its three most similar classes).

Per method: a jaxcam callable built once (an ``Explainer`` where the method has one; ``sess`` and
``DeepFeatureFactorization`` as users call them) and a pytorch-grad-cam object built once, its
hooks released before the next method (hooks left on the twin would slow every later call). One
warm-up call each: jaxcam's first call traces and compiles; 'compile s' is the XLA compile time
in it (JAX's backend-compile events), 'first call s' the whole call, and XLA compiling during
the timed calls is flagged (jaxcam recompiling on every call). The warm-up outputs are
compared (max |jaxcam - pytorch-grad-cam| of the maps, so the timed work is the same work; for
RandomCAM, whose weights are random on both sides, jaxcam's formula is run on jaxcam's
activations with the weights pytorch-grad-cam drew from a seeded NumPy generator). A first row
times the model's own forward on each side (jitted; ``torch.no_grad``) for reference. Then
interleaved rounds, alternating which side goes first, each jaxcam call waited for with
``jax.block_until_ready`` (pytorch-grad-cam returns NumPy arrays); medians. A method whose
round costs more than ``--budget / --rounds`` seconds gets fewer rounds (at least 1). A method
that fails on a side is listed with why, never left out.

``--fullgrad-batch n`` runs FullGrad on the first ``n`` images only (a jaxcam tree from before
a40d5e4 resized each of EfficientNet-Lite0's 21,008 bias channels to the image size before
adding them up, 4.2 GB per 224 px image: batch 8 was killed for memory on a 24 GB machine).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks._env import machine, prepare_process, usable_cores, versions

prepare_process()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import jaxcam  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LAYER = "head_conv"
INNER_BLOCK = 10  # the last block at stride 16 (14x14 at 224 px): RefineCAM's second layer
DFF_COMPONENTS = 16  # pytorch-grad-cam's DeepFeatureFactorization.__call__ default


@dataclasses.dataclass
class Pair:
    """The same weights on both sides, and the batch."""

    model: Any  # efficientnet_flax.EfficientNetLite0 (NNX)
    twin: torch.nn.Module  # TorchEfficientNetLite0, eval mode
    view: torch.nn.Module  # the twin with its feature map as module ``features``
    images: np.ndarray  # (B, H, W, 3) float32, normalised
    images_t: torch.Tensor  # (B, 3, H, W)
    classes: np.ndarray  # (B,) each image's top-1 class


@dataclasses.dataclass
class Case:
    """One method ready to time.

    Attributes:
      method: the row's name.
      jax_call: one jaxcam call (its result is waited for).
      torch_call: one pytorch-grad-cam call.
      compare: (jaxcam's warm-up output, pytorch-grad-cam's) -> max |difference|.
      compared: what ``compare`` compares.
      note: how the method is set up, for the table's notes.
      release: drops pytorch-grad-cam's hooks.
    """

    method: str
    jax_call: Callable[[], Any]
    torch_call: Callable[[], Any]
    compare: Callable[[Any, Any], float]
    compared: str
    note: str
    release: Callable[[], None]


class _View(torch.nn.Module):
    """The twin with its last feature map (head conv, BN, ReLU6: jaxcam's ``head_conv``) as a
    module output, which pytorch-grad-cam's hooks need (the twin applies ReLU6 functionally)."""

    def __init__(self, twin: torch.nn.Module):
        super().__init__()
        self.twin = twin
        self.features = _Features(twin)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.twin._fc(self.features(x).mean(dim=(2, 3)))


class _Features(torch.nn.Module):
    def __init__(self, twin: torch.nn.Module):
        super().__init__()
        self.__dict__["twin"] = twin  # not a submodule: the view's tree holds the twin once

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.twin.extract_features(x)


def images(batch: int, size: int, seed: int) -> np.ndarray:
    """Blocky random pictures with noise (tests/test_methods_more.py's), normalised."""
    import efficientnet_flax as ef

    rng = np.random.default_rng(seed)
    cells = -(-size // 16) + 1
    coarse = rng.uniform(0, 255, (batch, cells, cells, 3))
    pixels = np.clip(np.repeat(np.repeat(coarse, 16, 1), 16, 2)[:, :size, :size]
                     + rng.normal(0, 40, (batch, size, size, 3)), 0, 255)
    return np.asarray(ef.normalize(pixels), np.float32)


def make_pair(batch: int, size: int, seed: int) -> Pair:
    import efficientnet_flax as ef
    from efficientnet_flax.torch_twin import TorchEfficientNetLite0

    model = ef.load_pretrained()
    twin = TorchEfficientNetLite0()
    twin.load_state_dict(torch.load(ef.pretrained_weights_path(), map_location="cpu",
                                    weights_only=True), strict=True)
    twin.eval()
    x = images(batch, size, seed)
    classes = np.asarray(jnp.argmax(model(jnp.asarray(x)), -1))
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    return Pair(model, twin, _View(twin).eval(), x, xt, classes)


def _blocked(fn: Callable[[], Any]) -> Callable[[], Any]:
    return lambda: jax.block_until_ready(fn())


def _max_diff(a: Any, b: Any) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"maps of shapes {a.shape} (jaxcam) and {b.shape} (pytorch-grad-cam)")
    return float(np.abs(a - b).max())


def _releaser(*cams: Any) -> Callable[[], None]:
    """Release the forward hooks pytorch-grad-cam's objects put on the model."""
    def release() -> None:
        for cam in cams:
            for owner in (cam, getattr(cam, "base_cam", None),
                          *getattr(cam, "base_cam_per_layer", ())):
                hooks = getattr(owner, "activations_and_grads", None)
                if hooks is not None:
                    hooks.release()
    return release


def _logit_targets(classes: np.ndarray) -> list:
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    return [ClassifierOutputTarget(int(c)) for c in classes]


def _layer_case(p: Pair, name: str, method: str, pgc_cls: Any, *, targets: str = "top1",
                layers: Sequence[str] = (LAYER,), note: str = "") -> Case:
    """A method with a jaxcam ``Explainer`` and a pytorch-grad-cam ``BaseCAM``-like class."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputReST

    from jaxcam.targets import ClassifierOutputReST as JaxReST

    modules = {LAYER: p.view.features, f"blocks/{INNER_BLOCK}": p.twin._blocks[INNER_BLOCK]}
    target_layer = layers[0] if len(layers) == 1 else list(layers)
    explainer = jaxcam.Explainer(p.model, target_layer=target_layer, method=method)
    cam = pgc_cls(p.view, [modules[layer] for layer in layers])
    if targets == "top1":
        jax_targets, pgc_targets = p.classes, _logit_targets(p.classes)
    elif targets == "rest":
        category = int(p.classes[0])
        jax_targets = JaxReST(category)
        pgc_targets = [ClassifierOutputReST(category)] * len(p.classes)
    else:  # the method chooses (FinerCAM)
        jax_targets, pgc_targets = None, None
    return Case(name, _blocked(lambda: explainer(p.images, jax_targets)),
                lambda: cam(p.images_t, pgc_targets), _max_diff, "maps", note, _releaser(cam))


def _subset(p: Pair, n: int) -> Pair:
    """The first ``n`` images of the batch (the same weights)."""
    return dataclasses.replace(p, images=p.images[:n], images_t=p.images_t[:n],
                               classes=p.classes[:n])


def _fullgrad(p: Pair, batch: int) -> Case:
    from pytorch_grad_cam import FullGrad

    reduced = batch < len(p.images)
    p = _subset(p, batch)
    explainer = jaxcam.Explainer(p.model, method="fullgrad")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cam = FullGrad(p.twin, [])
    targets = _logit_targets(p.classes)
    return Case("FullGrad", _blocked(lambda: explainer(p.images, p.classes)),
                lambda: cam(p.images_t, targets), _max_diff, "maps",
                (f"**batch {batch}** (`--fullgrad-batch`); " if reduced else "")
                + f"input gradient and all {len(cam.bias_data)} batch norms' bias gradients",
                _releaser(cam))


def _randomcam(p: Pair, seed: int) -> Case:
    from pytorch_grad_cam import RandomCAM

    from jaxcam.adapters import make_adapter, normalize_layer_path
    from jaxcam.methods.layer import randomcam
    from jaxcam.postprocess import postprocess

    explainer = jaxcam.Explainer(p.model, target_layer=LAYER, method="randomcam")
    cam = RandomCAM(p.view, [p.view.features])
    targets = _logit_targets(p.classes)
    key = jax.random.key(seed)
    adapter, state = make_adapter(p.model, [normalize_layer_path(LAYER)], None)

    def compare(_: Any, __: Any) -> float:
        # pytorch-grad-cam draws its weights from NumPy's global generator after the forward
        # pass, nothing else drawing: seed it, run it, and redraw the same weights for jaxcam.
        np.random.seed(seed)
        ref = cam(p.images_t, targets)
        np.random.seed(seed)
        acts = jax.jit(adapter.forward)(state, jnp.asarray(p.images))[1][0]
        weights = np.random.uniform(-1, 1, size=(acts.shape[0], acts.shape[-1]))
        raw = randomcam(acts, None, key=key, weights=weights)
        return _max_diff(postprocess(raw, p.images.shape[1:3]), ref)

    return Case("RandomCAM", _blocked(lambda: explainer(p.images, p.classes, key=key)),
                lambda: cam(p.images_t, targets), compare,
                "jaxcam's formula on jaxcam's activations with the U(-1, 1) weights "
                "pytorch-grad-cam drew (seeded NumPy); the timed calls draw their own",
                "jaxcam runs no backward pass (uses_gradients=False); pytorch-grad-cam's "
                "RandomCAM runs one", _releaser(cam))


def _sess(p: Pair, num_scales: int) -> Case:
    from pytorch_grad_cam import SESS, GradCAM

    from jaxcam.methods.layer import sess

    cam = SESS(p.view, [p.view.features], base_method=GradCAM, num_scales=num_scales)
    targets = _logit_targets(p.classes)
    return Case("SESS", _blocked(lambda: sess(p.model, p.images, target_layer=LAYER,
                                              targets=p.classes, num_scales=num_scales)),
                lambda: cam(p.images_t, targets), _max_diff, "maps",
                f"base Grad-CAM, {num_scales} scales, window = step = image side, mean pool",
                _releaser(cam))


def _dff(p: Pair) -> Case:
    from pytorch_grad_cam import DeepFeatureFactorization as PgcDFF

    from jaxcam.methods.layer import DeepFeatureFactorization

    model = p.model
    explainer = DeepFeatureFactorization(model, LAYER,
                                         computation_on_concepts=lambda c: model.classifier(c))
    cam = PgcDFF(p.view, p.view.features, computation_on_concepts=p.twin._fc)

    def torch_call() -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scikit-learn warns when NMF reaches max_iter
            return cam(p.images_t, n_components=DFF_COMPONENTS)

    def compare(got: Any, ref: Any) -> float:
        return _max_diff(got[1], np.stack(ref[1]))

    return Case("DeepFeatureFactorization",
                _blocked(lambda: explainer(p.images, n_components=DFF_COMPONENTS)),
                torch_call, compare, "concept maps (B, k, H, W)",
                f"k = {DFF_COMPONENTS} concepts (NMF over the batch), classifier on the "
                "concepts", _releaser(cam))


def _forward(p: Pair) -> Case:
    """The model's own forward on both sides: jitted (weights as arguments) and no_grad."""
    from flax import nnx

    graph, state = nnx.split(p.model)
    forward = jax.jit(lambda s, x: nnx.merge(graph, s)(x))
    x = jnp.asarray(p.images)

    def torch_call() -> np.ndarray:
        with torch.no_grad():
            return p.twin(p.images_t).numpy()

    return Case("model forward (reference)", _blocked(lambda: forward(state, x)), torch_call,
                _max_diff, "logits", "jitted NNX forward vs the twin under `torch.no_grad`; "
                "not a method: what the model alone costs each side", lambda: None)


def _cases(args: argparse.Namespace) -> dict[str, Callable[[Pair], Case]]:
    from pytorch_grad_cam import (
        FEM,
        KPCA_CAM,
        FinerCAM,
        GradCAM,
        RefineCAM,
        SegEigenCAM,
        ShapleyCAM,
    )

    return {
        "forward": _forward,
        "gradcam": lambda p: _layer_case(p, "GradCAM (baseline)", "gradcam", GradCAM),
        "fullgrad": lambda p: _fullgrad(p, args.fullgrad_batch or args.batch),
        "kpcacam": lambda p: _layer_case(p, "KPCA-CAM", "kpcacam", KPCA_CAM,
                                         note="sigmoid kernel (default); pytorch-grad-cam: "
                                              "scikit-learn KernelPCA per image"),
        "finercam": lambda p: _layer_case(p, "FinerCAM", "finercam", FinerCAM, targets="none",
                                          note="top class against its 3 most similar"),
        "shapleycam": lambda p: _layer_case(p, "ShapleyCAM", "shapleycam", ShapleyCAM,
                                            targets="rest",
                                            note="ClassifierOutputReST; gradient and "
                                                 "Hessian-vector product"),
        "fem": lambda p: _layer_case(p, "FEM", "fem", FEM, note="no gradients"),
        "randomcam": lambda p: _randomcam(p, args.seed),
        "segeigencam": lambda p: _layer_case(p, "SegEigenCAM", "segeigencam", SegEigenCAM,
                                             note="classification targets (top-1 logit), as "
                                                  "the parity tests"),
        "refinecam": lambda p: _layer_case(p, "RefineCAM", "refinecam", RefineCAM,
                                           layers=(f"blocks/{INNER_BLOCK}", LAYER),
                                           note=f"Grad-CAM++ at blocks/{INNER_BLOCK} and "
                                                f"{LAYER}, product"),
        "sess": lambda p: _sess(p, args.sess_scales),
        "dff": _dff,
    }


METHODS = ("forward", "gradcam", "fullgrad", "kpcacam", "finercam", "shapleycam", "fem",
           "randomcam", "segeigencam", "refinecam", "sess", "dff")


def tree_state() -> str:
    """The commit measured, and whether the library's sources had uncommitted changes."""
    import subprocess

    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, check=True,
                              capture_output=True, text=True, timeout=30).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "jaxcam",
                                "efficientnet_flax"], cwd=ROOT, check=True,
                               capture_output=True, text=True, timeout=30).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    changed = [line for line in dirty if line.strip()]
    return head + (f" with uncommitted changes to {len(changed)} files of jaxcam/ and "
                   "efficientnet_flax/" if changed else "")


def _compile_seconds() -> float:
    """XLA compile time of this process so far (JAX's backend-compile events)."""
    return jaxcam.compile_stats().seconds


def time_case(case: Case, rounds: int, budget_s: float) -> dict[str, Any]:
    """Warm up both sides, compare their outputs, then up to ``rounds`` interleaved rounds."""
    compiled = _compile_seconds()
    start = time.perf_counter()
    jax_out = case.jax_call()
    jax_first = time.perf_counter() - start
    compile_s = _compile_seconds() - compiled
    start = time.perf_counter()
    torch_out = case.torch_call()
    torch_first = time.perf_counter() - start
    diff = case.compare(jax_out, torch_out)
    del jax_out, torch_out
    times: dict[str, list[float]] = {"jaxcam": [], "pgc": []}
    calls = [("jaxcam", case.jax_call), ("pgc", case.torch_call)]
    planned = rounds
    r = 0
    compiled = _compile_seconds()
    while r < planned:
        for side, fn in calls[r % 2:] + calls[:r % 2]:  # alternate which side goes first
            start = time.perf_counter()
            fn()
            times[side].append(time.perf_counter() - start)
        if r == 0:  # a round's cost decides how many fit in the budget
            per_round = times["jaxcam"][0] + times["pgc"][0]
            planned = max(1, min(rounds, int(budget_s / max(per_round, 1e-9))))
        r += 1
    # Compiling in the timed calls means jaxcam recompiles on every call (nothing else runs).
    steady_compile_s = (_compile_seconds() - compiled) / planned
    jax_ms = 1e3 * statistics.median(times["jaxcam"])
    pgc_ms = 1e3 * statistics.median(times["pgc"])
    return {"method": case.method, "jaxcam_ms": jax_ms, "pgc_ms": pgc_ms,
            "ratio": pgc_ms / jax_ms, "max_diff": diff, "compared": case.compared,
            "compile_s": compile_s, "jaxcam_first_s": jax_first, "pgc_first_s": torch_first,
            "steady_compile_s": steady_compile_s, "rounds": planned, "note": case.note,
            "times_s": times}


def table(rows: list[dict[str, Any]], failed: dict[str, str]) -> str:
    lines = ["| method | jaxcam ms | pytorch-grad-cam ms | ratio pgc/jaxcam | max \\|diff\\| | "
             "compile s | jaxcam first call s | rounds | notes |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for row in rows:
        what = "" if row["compared"] == "maps" else f"compared: {row['compared']}; "
        again = (f"; **jaxcam compiles on every call** ({row['steady_compile_s']:.1f} s of "
                 "XLA compile per timed call)" if row["steady_compile_s"] > 0.05 else "")
        lines.append(f"| {row['method']} | {row['jaxcam_ms']:.0f} | {row['pgc_ms']:.0f} | "
                     f"{row['ratio']:.2f}x | {row['max_diff']:.1e} | {row['compile_s']:.1f} | "
                     f"{row['jaxcam_first_s']:.1f} | {row['rounds']} | "
                     f"{what}{row['note']}{again} |")
    for name, why in failed.items():
        lines.append(f"| {name} | | | | | | | | not run: {why} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print the table, write JSON (and a RESULTS.md section with --md).

    Returns:
      0 when every method ran on both sides, 1 if one failed (it is still in the table).
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds after the warm-up")
    parser.add_argument("--budget", type=float, default=60.0,
                        help="seconds of timed rounds per method (at least one round)")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help="comma-separated, of: " + ", ".join(METHODS))
    parser.add_argument("--fullgrad-batch", type=int, default=None,
                        help="FullGrad on the first images only (default: the whole batch)")
    parser.add_argument("--sess-scales", type=int, default=12,
                        help="SESS's num_scales (pytorch-grad-cam's default 12)")
    parser.add_argument("--seed", type=int, default=0, help="images and RandomCAM's draws")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results",
                        help="folder for the JSON")
    parser.add_argument("--md", type=Path, default=None,
                        help="append a section to this Markdown file (e.g. benchmarks/RESULTS.md)")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.methods.split(",") if n.strip()]
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        parser.error(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
    torch.set_num_threads(usable_cores())  # XLA:CPU's pool is sized by the same count
    tree = tree_state()  # the sources are imported now: what is measured
    started = time.perf_counter()
    pair = make_pair(args.batch, args.size, args.seed)
    print(f"batch {args.batch}, {args.size} px, up to {args.rounds} rounds; backend "
          f"{jax.default_backend()}; torch threads {torch.get_num_threads()}", flush=True)
    builders = _cases(args)
    rows: list[dict[str, Any]] = []
    failed: dict[str, str] = {}
    for name in names:
        case = None
        try:
            case = builders[name](pair)
            row = time_case(case, args.rounds, args.budget)
        except Exception as error:  # report and go on: one broken method must not hide the rest
            first_line = (str(error).strip().splitlines() or [""])[0]
            failed[name] = f"{type(error).__name__}: {first_line}"
            print(f"{name}: FAILED {failed[name]}", flush=True)
            continue
        finally:
            if case is not None:
                case.release()
        rows.append(row)
        print(f"{row['method']}: jaxcam {row['jaxcam_ms']:.0f} ms, pytorch-grad-cam "
              f"{row['pgc_ms']:.0f} ms ({row['ratio']:.2f}x), max |diff| {row['max_diff']:.1e}, "
              f"compile {row['compile_s']:.1f} s, {row['rounds']} rounds", flush=True)
    elapsed = time.perf_counter() - started
    md = table(rows, failed)
    print(md)

    env = machine()
    env["backend"] = jax.default_backend()
    env["torch_threads"] = torch.get_num_threads()
    libraries = versions()
    command = ("python -m benchmarks.methods " + " ".join(
        argv if argv is not None else sys.argv[1:])).strip()
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"methods_{stamp}_{jax.default_backend()}.json").write_text(json.dumps(
        {"machine": env, "libraries": libraries, "tree": tree, "command": command,
         "seed": args.seed,
         "batch": args.batch, "size": args.size, "fullgrad_batch": args.fullgrad_batch,
         "sess_scales": args.sess_scales,
         "rows": rows, "failed": failed, "elapsed_s": elapsed}, indent=1))
    if args.md is not None:
        with open(args.md, "a") as f:
            f.write(
                f"\n## New methods vs pytorch-grad-cam {libraries['grad-cam']}, "
                f"EfficientNet-Lite0, batch {args.batch}, {args.size} px ({env['date'][:10]})\n\n"
                f"- machine: {env['cpu']}, {env['cores']} cores, GPU: {env['gpu']}; JAX backend "
                f"{env['backend']}; torch threads {env['torch_threads']} (= the cores XLA:CPU's "
                f"pool uses); OMP_WAIT_POLICY={env['omp_wait_policy']}\n"
                "- libraries: " + ", ".join(f"{k} {v}" for k, v in libraries.items()) + "\n"
                f"- command: `{command}` ({elapsed:.0f} s, seed {args.seed}); tree: {tree}\n"
                "- model: EfficientNet-Lite0, shipped ImageNet weights: the Flax port for jaxcam, "
                "its PyTorch twin with the same state dict for pytorch-grad-cam; layer "
                f"`{LAYER}` (7x7x1280 at 224 px) unless the notes say otherwise; targets each "
                "image's top-1 class unless noted\n"
                "- timing: one warm-up call per side (compile s: XLA compile time in jaxcam's "
                "first call, from JAX's backend-compile events, tracing not included; first "
                "call s: that whole call), then interleaved rounds alternating which side goes "
                "first, "
                "jaxcam waited for with `jax.block_until_ready`; medians. Up to "
                f"{args.rounds} rounds, fewer (at least 1) where a round costs over "
                f"{args.budget / args.rounds:.0f} s. ratio = pytorch-grad-cam / jaxcam "
                "(above 1: jaxcam faster). max |diff|: the warm-up calls' maps, both in [0, 1]\n\n"
                + md + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
