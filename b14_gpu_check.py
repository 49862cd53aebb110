"""Helper B14's one-off device check (deleted after): the final explain step on the GPU."""
import time

import jax
import numpy as np
from flax import nnx

import msdnet_flax
from jaxcam.batch import ExplainStep
from msdnet_flax.model.presets import get_config

print(jax.devices(), flush=True)
for name, bs in (("cifar10_anytime", 64), ("imagenet_step4", 32)):
    config = get_config(name)
    model = msdnet_flax.MSDNet(config, rngs=nnx.Rngs(0))
    model.eval()
    s = config.image_size
    x = np.random.default_rng(0).uniform(0, 255, (bs + 5, s, s, 3)).astype(np.float32)

    def mk(b, m):
        return ExplainStep(model, image_size=s, mean=(0.5,) * 3, std=(0.25,) * 3,
                           exits=tuple(range(model.num_exits)), batch_size=b, micro_batch=m)

    for micro in (None, 32):
        step = mk(bs, micro)
        placed = step.put(x[:bs])
        a = step.compute(*placed)
        ts = []
        for _ in range(7):
            t = time.perf_counter()
            step.compute(*placed)
            ts.append(time.perf_counter() - t)
        b = step(x[5:bs + 5])
        shift = np.array_equal(a[0][:, 5:], b[0][:, :bs - 5]) and \
            np.array_equal(a[1][:, 5:], b[1][:, :bs - 5])
        c = mk(7, micro)(x[:7])
        same7 = np.array_equal(a[0][:, :7], c[0]) and np.array_equal(a[1][:, :7], c[1])
        print(f"{name} micro={micro} batch={bs}: median step {1000 * np.median(ts):.1f} ms = "
              f"{bs / np.median(ts):.0f} images/s; exact shifted 5 slots: {shift}; exact at "
              f"batch 7: {same7}", flush=True)
