"""Grad-CAM over the model's own jitted forward, one realistic model per framework, in one run.

    python -m benchmarks.frameworks [--batch 16] [--size 224] [--rounds 7]
        [--frameworks nnx,linen,...] [--out benchmarks/results] [--md benchmarks/RESULTS.md]

Issue 13's target: jaxcam's Grad-CAM at an inner layer costs at most 1.3x the model's own
jitted forward (batch 16, 224 px), in every framework. Per framework, a ResNet-18-class network
with random weights (1000 classes) is built the way that framework's users build it:

- ``nnx``: a ResNet-18 in Flax NNX (torchvision's layout: ``layer1`` .. ``layer4`` of two basic
  blocks), layer ``layer3/1``;
- ``nnx-vit``: the NNX ViT of ``tests/_vit.py`` at ViT-Tiny's shape (16 px patches, width 192,
  3 heads, 12 blocks; Dosovitskiy et al., ICLR 2021), layer ``blocks/10`` through
  ``reshape_transform=jaxcam.reshape.vit()``;
- ``linen``: the Flax examples' ResNet-18 (``__call__(x, train)``), through
  ``jaxcam.LinenModel(..., train=False)``, layer ``ResNetBlock_5``;
- ``equinox``: a ResNet-18 taking one CHW image per call with BatchNorm in an ``eqx.nn.State``,
  through ``jaxcam.EquinoxModel``, layer ``layer3/1``;
- ``haiku``: ``hk.nets.ResNet18`` under ``hk.transform_with_state``, through
  ``jaxcam.HaikuModel(..., is_training=False)``, layer ``res_net18/~/block_group_2``;
- ``keras``: ``keras.applications.ResNet50(weights=None)`` on the JAX backend (the model the
  issue names; ResNet-50, not 18), layer ``conv4_block6_out``;
- ``torch``: torchvision's ``resnet18(weights=None)`` run as JAX through torchax, NCHW images,
  layer ``layer3``.

The forward is each framework's own jitted inference call, weights as arguments
(``nnx.split``/``merge``, ``module.apply(..., train=False)``, the vmapped Equinox model in
inference mode, Haiku's ``apply``, Keras' ``stateless_call(..., training=False)``, torchax's
``extract_jax``). Grad-CAM is a ``jaxcam.Explainer`` built once and called with the same images
and fixed random target classes. Timing: one warm-up call each (compilation), then interleaved
rounds (forward, Grad-CAM, alternating which goes first), each call waited for with
``jax.block_until_ready``; medians over rounds. ``benchmarks.timing`` is not used because it
imports torch at module level, and this benchmark must run without the optional frameworks: a
framework that is not installed is skipped and reported as such.
"""

from __future__ import annotations

import os

# Keras reads its backend once, when first imported: before anything can import it.
os.environ.setdefault("KERAS_BACKEND", "jax")

import argparse  # noqa: E402
import datetime  # noqa: E402
import importlib.metadata  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jaxcam  # noqa: E402
from benchmarks._env import cpu_model, gpu_name, prepare_process, usable_cores  # noqa: E402

N_CLASSES = 1000
TARGET_RATIO = 1.3
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Case:
    """One framework's model, ready to time.

    Attributes:
      framework: the row's name.
      model: what the model is.
      layer: the Grad-CAM layer, as the framework names it.
      forward: the model's own jitted forward on the images (logits).
      explainer: the prepared ``jaxcam.Explainer``.
      images: the input batch, in the model's layout.
      source: the model object as the user holds it.
    """

    framework: str
    model: str
    layer: str
    forward: Callable[[], Any]
    explainer: jaxcam.Explainer
    images: jax.Array
    source: Any = None


# Each builder imports its framework inside, so this module imports without any of them.
# Builders take (batch, size, key) and return a Case.


def _nnx_resnet18(batch: int, size: int, key: jax.Array) -> Case:
    from flax import nnx

    class Block(nnx.Module):
        def __init__(self, cin: int, cout: int, stride: int, rngs: nnx.Rngs):
            self.conv1 = nnx.Conv(cin, cout, (3, 3), strides=stride, padding=1, use_bias=False,
                                  rngs=rngs)
            self.bn1 = nnx.BatchNorm(cout, rngs=rngs)
            self.conv2 = nnx.Conv(cout, cout, (3, 3), padding=1, use_bias=False, rngs=rngs)
            self.bn2 = nnx.BatchNorm(cout, rngs=rngs)
            # nnx.data: an attribute that may be None is static unless marked as data
            self.down = nnx.data(None if stride == 1 and cin == cout else nnx.Sequential(
                nnx.Conv(cin, cout, (1, 1), strides=stride, use_bias=False, rngs=rngs),
                nnx.BatchNorm(cout, rngs=rngs)))

        def __call__(self, x: jax.Array) -> jax.Array:
            y = self.bn2(self.conv2(jax.nn.relu(self.bn1(self.conv1(x)))))
            return jax.nn.relu(y + (x if self.down is None else self.down(x)))

    class ResNet18(nnx.Module):
        def __init__(self, num_classes: int, rngs: nnx.Rngs):
            self.conv1 = nnx.Conv(3, 64, (7, 7), strides=2, padding=3, use_bias=False, rngs=rngs)
            self.bn1 = nnx.BatchNorm(64, rngs=rngs)
            widths = ((64, 64, 1), (64, 128, 2), (128, 256, 2), (256, 512, 2))
            self.layer1, self.layer2, self.layer3, self.layer4 = (
                nnx.List([Block(cin, cout, stride, rngs), Block(cout, cout, 1, rngs)])
                for cin, cout, stride in widths)
            self.fc = nnx.Linear(512, num_classes, rngs=rngs)

        def __call__(self, x: jax.Array) -> jax.Array:
            x = jax.nn.relu(self.bn1(self.conv1(x)))
            x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
            for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
                for block in stage:
                    x = block(x)
            return self.fc(jnp.mean(x, axis=(1, 2)))

    model = ResNet18(N_CLASSES, nnx.Rngs(int(jax.random.randint(key, (), 0, 2 ** 30))))
    model.eval()
    return _nnx_case("nnx", "ResNet-18 (NNX)", model, "layer3/1", batch, size, key)


def _nnx_case(framework: str, name: str, model: Any, layer: str, batch: int, size: int,
              key: jax.Array, **options: Any) -> Case:
    from flax import nnx

    graph, state = nnx.split(model)
    fwd = jax.jit(lambda s, x: nnx.merge(graph, s)(x))
    images = jax.random.normal(key, (batch, size, size, 3))
    explainer = jaxcam.Explainer(model, target_layer=layer, **options)
    return Case(framework, name, layer, lambda: fwd(state, images), explainer, images, model)


def _nnx_vit(batch: int, size: int, key: jax.Array) -> Case:
    from flax import nnx

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests._vit import FlaxViT, ViTConfig  # imports torch (its PyTorch twin lives there)

    config = ViTConfig(image_size=size, patch=16, width=192, depth=12, heads=3,
                       num_classes=N_CLASSES)
    model = FlaxViT(config, rngs=nnx.Rngs(int(jax.random.randint(key, (), 0, 2 ** 30))))
    model.eval()
    return _nnx_case("nnx-vit", "ViT-Tiny/16, 12 blocks (NNX)", model, "blocks/10", batch,
                     size, key, reshape_transform=jaxcam.reshape.vit())


def _linen_resnet18(batch: int, size: int, key: jax.Array) -> Case:
    from functools import partial

    import flax.linen as nn

    class ResNetBlock(nn.Module):  # the Flax examples' (examples/imagenet/models.py)
        filters: int
        conv: Any
        norm: Any
        strides: tuple[int, int] = (1, 1)

        @nn.compact
        def __call__(self, x: jax.Array) -> jax.Array:
            y = self.conv(self.filters, (3, 3), self.strides)(x)
            y = nn.relu(self.norm()(y))
            y = self.norm(scale_init=nn.initializers.zeros_init())(
                self.conv(self.filters, (3, 3))(y))
            if x.shape != y.shape:
                x = self.norm(name="norm_proj")(
                    self.conv(self.filters, (1, 1), self.strides, name="conv_proj")(x))
            return nn.relu(x + y)

    class ResNet(nn.Module):
        stage_sizes: Sequence[int]
        num_classes: int

        @nn.compact
        def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
            conv = partial(nn.Conv, use_bias=False)
            norm = partial(nn.BatchNorm, use_running_average=not train, momentum=0.9,
                           epsilon=1e-5, axis_name="batch")
            x = conv(64, (7, 7), (2, 2), padding=[(3, 3), (3, 3)], name="conv_init")(x)
            x = nn.relu(norm(name="bn_init")(x))
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
            for i, block_size in enumerate(self.stage_sizes):
                for j in range(block_size):
                    strides = (2, 2) if i > 0 and j == 0 else (1, 1)
                    x = ResNetBlock(64 * 2 ** i, conv=conv, norm=norm, strides=strides)(x)
            return nn.Dense(self.num_classes)(jnp.mean(x, axis=(1, 2)))

    module = ResNet(stage_sizes=[2, 2, 2, 2], num_classes=N_CLASSES)
    images = jax.random.normal(key, (batch, size, size, 3))
    variables = module.init(key, images[:1], train=False)
    fwd = jax.jit(lambda v, x: module.apply(v, x, train=False))
    layer = "ResNetBlock_5"
    explainer = jaxcam.Explainer(jaxcam.LinenModel(module, variables, train=False),
                                 target_layer=layer)
    return Case("linen", "ResNet-18, Flax examples (Linen)", layer,
                lambda: fwd(variables, images), explainer, images)


def _equinox_resnet18(batch: int, size: int, key: jax.Array) -> Case:
    import equinox as eqx

    class Block(eqx.Module):
        conv1: eqx.nn.Conv2d
        bn1: eqx.nn.BatchNorm
        conv2: eqx.nn.Conv2d
        bn2: eqx.nn.BatchNorm
        downsample: tuple | None

        def __init__(self, cin: int, cout: int, stride: int, key: jax.Array):
            k1, k2, k3 = jax.random.split(key, 3)
            self.conv1 = eqx.nn.Conv2d(cin, cout, 3, stride, padding=1, use_bias=False, key=k1)
            self.bn1 = eqx.nn.BatchNorm(cout, axis_name="batch", mode="batch")
            self.conv2 = eqx.nn.Conv2d(cout, cout, 3, 1, padding=1, use_bias=False, key=k2)
            self.bn2 = eqx.nn.BatchNorm(cout, axis_name="batch", mode="batch")
            self.downsample = None if stride == 1 and cin == cout else (
                eqx.nn.Conv2d(cin, cout, 1, stride, use_bias=False, key=k3),
                eqx.nn.BatchNorm(cout, axis_name="batch", mode="batch"))

        def __call__(self, x: jax.Array, state: eqx.nn.State) -> tuple[jax.Array, Any]:
            y, state = self.bn1(self.conv1(x), state)
            y, state = self.bn2(self.conv2(jax.nn.relu(y)), state)
            if self.downsample is not None:
                x, state = self.downsample[1](self.downsample[0](x), state)
            return jax.nn.relu(x + y), state

    class ResNet18(eqx.Module):
        conv1: eqx.nn.Conv2d
        bn1: eqx.nn.BatchNorm
        layer1: tuple
        layer2: tuple
        layer3: tuple
        layer4: tuple
        fc: eqx.nn.Linear

        def __init__(self, key: jax.Array):
            keys = jax.random.split(key, 10)
            self.conv1 = eqx.nn.Conv2d(3, 64, 7, 2, padding=3, use_bias=False, key=keys[0])
            self.bn1 = eqx.nn.BatchNorm(64, axis_name="batch", mode="batch")
            widths = ((64, 64, 1), (64, 128, 2), (128, 256, 2), (256, 512, 2))
            self.layer1, self.layer2, self.layer3, self.layer4 = (
                (Block(cin, cout, stride, keys[1 + 2 * i]), Block(cout, cout, 1, keys[2 + 2 * i]))
                for i, (cin, cout, stride) in enumerate(widths))
            self.fc = eqx.nn.Linear(512, N_CLASSES, key=keys[9])

        def __call__(self, x: jax.Array, state: eqx.nn.State) -> tuple[jax.Array, Any]:
            x, state = self.bn1(self.conv1(x), state)
            x = eqx.nn.MaxPool2d(3, 2, padding=1)(jax.nn.relu(x))
            for block in (*self.layer1, *self.layer2, *self.layer3, *self.layer4):
                x, state = block(x, state)
            return self.fc(jnp.mean(x, axis=(1, 2))), state

    model, state = eqx.nn.make_with_state(ResNet18)(key)
    images = jax.random.normal(key, (batch, 3, size, size))  # Equinox's CHW per image

    @eqx.filter_jit
    def fwd(m: Any, s: Any, x: jax.Array) -> jax.Array:
        m = eqx.nn.inference_mode(m)
        return jax.vmap(lambda xi: m(xi, s)[0])(x)

    layer = "layer3/1"
    explainer = jaxcam.Explainer(jaxcam.EquinoxModel(model, state), target_layer=layer)
    return Case("equinox", "ResNet-18, one CHW image per call (Equinox)", layer,
                lambda: fwd(model, state, images), explainer, images)


def _haiku_resnet18(batch: int, size: int, key: jax.Array) -> Case:
    import haiku as hk

    net = hk.transform_with_state(
        lambda x, is_training: hk.nets.ResNet18(N_CLASSES)(x, is_training=is_training))
    images = jax.random.normal(key, (batch, size, size, 3))
    params, state = net.init(key, images[:1], is_training=True)
    fwd = jax.jit(lambda p, s, x: net.apply(p, s, None, x, is_training=False)[0])
    layer = "res_net18/~/block_group_2"
    explainer = jaxcam.Explainer(jaxcam.HaikuModel(net, params, state, is_training=False),
                                 target_layer=layer)
    return Case("haiku", "hk.nets.ResNet18 (Haiku)", layer,
                lambda: fwd(params, state, images), explainer, images)


def _keras_resnet50(batch: int, size: int, key: jax.Array) -> Case:
    import keras

    model = keras.applications.ResNet50(weights=None, input_shape=(size, size, 3),
                                        classes=N_CLASSES)
    images = jax.random.normal(key, (batch, size, size, 3))
    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]
    fwd = jax.jit(lambda t, n, x: model.stateless_call(t, n, x, training=False)[0])
    layer = "conv4_block6_out"
    explainer = jaxcam.Explainer(model, target_layer=layer)
    return Case("keras", "keras.applications.ResNet50 (Keras 3, JAX)", layer,
                lambda: fwd(trainable, non_trainable, images), explainer, images)


def _torch_resnet18(batch: int, size: int, key: jax.Array) -> Case:
    import torch
    import torchvision

    from jaxcam.adapters._torchax_compat import import_torchax

    torchax = import_torchax()
    torch.manual_seed(int(jax.random.randint(key, (), 0, 2 ** 30)))
    model = torchvision.models.resnet18(weights=None).eval()
    weights, func = torchax.extract_jax(model)
    fwd = jax.jit(lambda w, x: func(w, (x,)))
    images = jax.random.normal(key, (batch, 3, size, size))  # PyTorch's NCHW
    layer = "layer3"
    explainer = jaxcam.Explainer(model, target_layer=layer)
    return Case("torch", "torchvision resnet18 (PyTorch via torchax)", layer,
                lambda: fwd(weights, images), explainer, images)


# name -> (builder, the distributions it needs)
FRAMEWORKS: dict[str, tuple[Callable[[int, int, jax.Array], Case], tuple[str, ...]]] = {
    "nnx": (_nnx_resnet18, ("flax",)),
    "nnx-vit": (_nnx_vit, ("flax", "torch")),
    "linen": (_linen_resnet18, ("flax",)),
    "equinox": (_equinox_resnet18, ("equinox",)),
    "haiku": (_haiku_resnet18, ("dm-haiku",)),
    "keras": (_keras_resnet50, ("keras",)),
    "torch": (_torch_resnet18, ("torch", "torchvision", "torchax")),
}
_MODULES = {"dm-haiku": "haiku"}


def missing(framework: str) -> list[str]:
    """The distributions a framework's row needs that are not installed."""
    return [d for d in FRAMEWORKS[framework][1]
            if importlib.util.find_spec(_MODULES.get(d, d)) is None]


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def time_case(case: Case, classes: jax.Array, rounds: int) -> dict[str, Any]:
    """Warm up both calls, then ``rounds`` interleaved rounds; medians in milliseconds."""
    def forward() -> Any:
        return jax.block_until_ready(case.forward())

    def gradcam() -> Any:
        return jax.block_until_ready(case.explainer(case.images, targets=classes))

    first = {}
    for name, fn in (("forward", forward), ("gradcam", gradcam)):
        start = time.perf_counter()
        out = fn()
        first[name] = time.perf_counter() - start
    maps_shape = tuple(out.shape)
    times: dict[str, list[float]] = {"forward": [], "gradcam": []}
    calls = [("forward", forward), ("gradcam", gradcam)]
    for r in range(rounds):
        for name, fn in calls[r % 2:] + calls[:r % 2]:  # alternate which runs first
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    fwd_ms = 1e3 * statistics.median(times["forward"])
    cam_ms = 1e3 * statistics.median(times["gradcam"])
    return {"framework": case.framework, "model": case.model, "layer": case.layer,
            "forward_ms": fwd_ms, "gradcam_ms": cam_ms, "ratio": cam_ms / fwd_ms,
            "rounds": rounds, "first_call_s": first, "maps_shape": maps_shape,
            "times_s": times}


def table(rows: list[dict[str, Any]], skipped: dict[str, str]) -> str:
    """The Markdown table of the rows (and one line per skipped framework)."""
    lines = ["| framework | model | layer | forward ms | Grad-CAM ms | ratio |",
             "| --- | --- | --- | ---: | ---: | ---: |"]
    for row in rows:
        flag = "" if row["ratio"] <= TARGET_RATIO else " (over 1.3x)"
        lines.append(f"| {row['framework']} | {row['model']} | `{row['layer']}` | "
                     f"{row['forward_ms']:.1f} | {row['gradcam_ms']:.1f} | "
                     f"{row['ratio']:.2f}x{flag} |")
    for name, why in skipped.items():
        lines.append(f"| {name} | skipped: {why} | | | | |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print the table, write JSON (and a RESULTS.md section with --md).

    Returns:
      0 when every framework asked for ran (or was skipped as absent), 1 if one failed.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds after the warm-up")
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS),
                        help="comma-separated, of: " + ", ".join(FRAMEWORKS))
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results",
                        help="folder for the JSON")
    parser.add_argument("--md", type=Path, default=None,
                        help="append a section to this Markdown file (e.g. benchmarks/RESULTS.md)")
    args = parser.parse_args(argv)
    prepare_process()
    names = [n.strip() for n in args.frameworks.split(",") if n.strip()]
    unknown = [n for n in names if n not in FRAMEWORKS]
    if unknown:
        parser.error(f"unknown framework(s) {unknown}; choose from {list(FRAMEWORKS)}")
    seed = args.seed if args.seed is not None else int(np.random.SeedSequence().entropy % 2 ** 31)
    print(f"seed {seed}; batch {args.batch}, {args.size} px, {args.rounds} rounds; "
          f"backend {jax.default_backend()}", flush=True)
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    failed: dict[str, str] = {}
    for i, name in enumerate(names):
        absent = missing(name)
        if absent:
            skipped[name] = "not installed: " + ", ".join(absent)
            print(f"{name}: skipped ({skipped[name]})", flush=True)
            continue
        key = jax.random.key(seed + i)
        try:
            case = FRAMEWORKS[name][0](args.batch, args.size, key)
            classes = jax.random.randint(jax.random.fold_in(key, 1), (args.batch,), 0, N_CLASSES)
            row = time_case(case, classes, args.rounds)
        except Exception as error:  # report and go on: one broken framework must not hide the rest
            first_line = (str(error).strip().splitlines() or [""])[0]
            failed[name] = f"{type(error).__name__}: {first_line}"
            print(f"{name}: FAILED {failed[name]}", flush=True)
            continue
        if row["maps_shape"] != (args.batch, args.size, args.size):
            failed[name] = f"maps of shape {row['maps_shape']}"
            continue
        rows.append(row)
        print(f"{name}: forward {row['forward_ms']:.1f} ms, Grad-CAM {row['gradcam_ms']:.1f} ms, "
              f"{row['ratio']:.2f}x", flush=True)
    elapsed = time.perf_counter() - started
    skipped.update({n: "FAILED: " + why for n, why in failed.items()})
    md = table(rows, skipped)
    print(md)

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    machine = {"cpu": cpu_model(), "cores": usable_cores(), "gpu": gpu_name(),
               "backend": jax.default_backend(),
               "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
    libraries = {d: _version(d) for d in ("jax", "jaxlib", "flax", "equinox", "dm-haiku",
                                          "keras", "torch", "torchvision", "torchax")}
    libraries["python"] = platform.python_version()
    command = "python -m benchmarks.frameworks " + " ".join(
        argv if argv is not None else sys.argv[1:])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"frameworks_{stamp}_{jax.default_backend()}.json").write_text(json.dumps(
        {"machine": machine, "libraries": libraries, "command": command.strip(), "seed": seed,
         "batch": args.batch, "size": args.size, "rows": rows, "skipped": skipped,
         "elapsed_s": elapsed}, indent=1))
    if args.md is not None:
        with open(args.md, "a") as f:
            f.write(f"\n## {machine['date'][:10]}: Grad-CAM over the model's own forward, "
                    f"per framework\n\n"
                    f"- machine: {machine['cpu']}, {machine['cores']} cores, GPU: "
                    f"{machine['gpu']}; JAX backend {machine['backend']}\n"
                    f"- libraries: " + ", ".join(f"{k} {v}" for k, v in libraries.items()) + "\n"
                    f"- command: `{command.strip()}` ({elapsed:.0f} s, seed {seed}); batch "
                    f"{args.batch}, {args.size} px, random weights, 1000 classes, fixed random "
                    f"target classes\n"
                    f"- timing: one warm-up call each, then {args.rounds} interleaved rounds "
                    f"(forward, Grad-CAM); medians. Target: ratio <= {TARGET_RATIO}x.\n\n"
                    + md + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
