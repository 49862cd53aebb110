"""Input VJP of stride-2 3x3 convs: JAX's rule vs ``fast_strided_conv_grads`` (auto / always).

    python -m benchmarks.bench_conv_grad [--rounds 20]

Shapes are MSD-Net classifier-head convs (NHWC, padding 1); "head" chains both, as in a head.
Each round calls every contender once (interleaved, so all see the same machine load); medians
over the rounds after a warm-up. "rel err" is the fast VJP's max error relative to JAX's.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxcam.extend import fast_strided_conv_grads


def conv(x: jax.Array, w: jax.Array) -> jax.Array:
    return lax.conv_general_dilated(x, w, (2, 2), ((1, 1), (1, 1)),
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))


def head(x: jax.Array, w1: jax.Array, w2: jax.Array) -> jax.Array:
    return conv(jax.nn.relu(conv(x, w1)), w2)


CASES: dict[str, tuple[Callable[..., jax.Array], tuple[tuple[int, ...], ...]]] = {
    "(64,4,4,128)->128": (conv, ((64, 4, 4, 128), (3, 3, 128, 128))),
    "(64,8,8,284)->128": (conv, ((64, 8, 8, 284), (3, 3, 284, 128))),
    "head: both": (head, ((64, 8, 8, 284), (3, 3, 284, 128), (3, 3, 128, 128))),
}


def input_vjp(fn: Callable[..., jax.Array]) -> Callable[..., jax.Array]:
    return jax.jit(lambda x, *ws, ct: jax.vjp(lambda x: fn(x, *ws), x)[1](ct)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"jax {jax.__version__}, {jax.devices()[0].device_kind}, "
          f"median of {args.rounds} rounds (ms)")
    names = ("forward", "jax vjp", "fast auto", "fast always")
    print(f"{'case':>18} " + " ".join(f"{n:>11}" for n in names) + f" {'rel err':>8}")
    for case, (fn, shapes) in CASES.items():
        arrays = [jnp.asarray(rng.normal(size=s).astype(np.float32)) for s in shapes]
        ct = jnp.asarray(rng.normal(size=jax.eval_shape(fn, *arrays).shape).astype(np.float32))
        # Arrays are passed as arguments (not closed over) so XLA cannot constant-fold them.
        compiled = {
            "forward": functools.partial(jax.jit(fn), *arrays),
            "jax vjp": functools.partial(input_vjp(fn), *arrays, ct=ct),
            "fast auto": functools.partial(input_vjp(fast_strided_conv_grads(fn)), *arrays, ct=ct),
            "fast always": functools.partial(
                input_vjp(fast_strided_conv_grads(fn, mode="always")), *arrays, ct=ct),
        }
        results = {name: f().block_until_ready() for name, f in compiled.items()}  # warm-up
        times: dict[str, list[float]] = {name: [] for name in compiled}
        for _ in range(args.rounds):
            for name, f in compiled.items():
                start = time.perf_counter()
                f().block_until_ready()
                times[name].append(1e3 * (time.perf_counter() - start))
        ref = np.asarray(results["jax vjp"])
        err = max(np.abs(np.asarray(results[n]) - ref).max() / np.abs(ref).max()
                  for n in ("fast auto", "fast always"))
        print(f"{case:>18} " + " ".join(f"{statistics.median(times[n]):11.2f}" for n in names)
              + f" {err:8.1e}")


if __name__ == "__main__":
    main()
