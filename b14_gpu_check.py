"""Helper B14's one-off device check (deleted after): chunk sizes of the explain step."""
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
    for micro in (None, 16, 32):
        step = ExplainStep(model, image_size=s, mean=(0.5,) * 3, std=(0.25,) * 3,
                           exits=tuple(range(model.num_exits)), batch_size=bs,
                           micro_batch=micro)
        placed = step.put(x[:bs])
        a = step.compute(*placed)
        t = time.perf_counter()
        for _ in range(5):
            step.compute(*placed)
        dt = (time.perf_counter() - t) / 5
        b = step(x[5:bs + 5])  # every image 5 slots earlier
        shift = np.array_equal(a[0][:, 5:], b[0][:, :bs - 5]) and \
            np.array_equal(a[1][:, 5:], b[1][:, :bs - 5])
        small = ExplainStep(model, image_size=s, mean=(0.5,) * 3, std=(0.25,) * 3,
                            exits=tuple(range(model.num_exits)), batch_size=7,
                            micro_batch=micro)
        c = small(x[:7])
        same7 = np.array_equal(a[0][:, :7], c[0]) and np.array_equal(a[1][:, :7], c[1])
        print(f"{name} micro={micro} batch={bs}: step {1000 * dt:.1f} ms = {bs / dt:.0f} "
              f"images/s; exact when shifted 5 slots: {shift} (max "
              f"{float(np.abs(a[0][:, 5:] - b[0][:, :bs - 5]).max()):.1e}); exact at batch 7 "
              f"(compiled {small.batch_size}): {same7}", flush=True)
