"""The device side: one jitted, SPMD explain step over every local device.

A ``jax.sharding.Mesh`` with one axis, ``'data'``, spans the process's devices; each batch is
sharded along it, the model's parameters are replicated, and the step (normalise, then
``jaxcam.explain_exits`` for the method and any compared methods) is compiled once, ahead of
time, for one batch shape. Shorter batches are padded to that shape and the padding dropped, so
no input can trigger a second compilation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxcam import explain_exits
from jaxcam.adapters import merge_eval

__all__ = ["ExplainStep"]


class ExplainStep:
    """Explain fixed-size batches of preprocessed images on all local devices.

    Args:
      model: a multi-exit NNX model (``exit_features``/``classify``).
      image_size: side of the model's (square) input.
      mean: per-channel normalisation mean on the [0, 1] scale.
      std: per-channel normalisation standard deviation on the [0, 1] scale.
      method: an ``explain_exits`` method.
      exits: 0-based exits to explain.
      target: ``"pred"`` (each exit's own top class) or ``"index"`` (classes given per image).
      compare: further methods computed in the same step (for pictures only).
      batch_size: images per step; rounded up to a multiple of the number of devices.
      devices: the devices of the mesh (default ``jax.local_devices()``).

    Attributes:
      batch_size: the padded per-step batch.
      compilations: how many times the step was traced and compiled (1 after construction).
      compile_seconds: time spent compiling.
    """

    def __init__(self, model: Any, *, image_size: int, mean: Sequence[float],
                 std: Sequence[float],
                 method: str = "gradcam", exits: Sequence[int], target: str = "pred",
                 compare: Sequence[str] = (), batch_size: int = 32,
                 devices: Sequence[jax.Device] | None = None):
        import time

        from flax import nnx

        if target not in ("pred", "index"):
            raise ValueError(f"target must be 'pred' or 'index', got {target!r}")
        devices = list(jax.local_devices() if devices is None else devices)
        self.mesh = Mesh(np.asarray(devices, dtype=object), ("data",))
        n = len(devices)
        self.batch_size = -(-max(1, int(batch_size)) // n) * n
        self.image_size = int(image_size)
        self.exits = tuple(int(k) for k in exits)
        self.compilations = 0
        self._replicated = NamedSharding(self.mesh, PartitionSpec())
        self._batch = NamedSharding(self.mesh, PartitionSpec("data"))
        per_exit = NamedSharding(self.mesh, PartitionSpec(None, "data"))
        graph, state = nnx.split(model)
        self._state = jax.device_put(state, self._replicated)
        mean32 = np.asarray(mean, np.float32)
        std32 = np.asarray(std, np.float32)
        compare = tuple(compare)

        def step(state: Any, images: jax.Array, classes: jax.Array
                 ) -> tuple[jax.Array, jax.Array, tuple[jax.Array, ...]]:
            self.compilations += 1  # runs only while tracing: once per compilation
            net = merge_eval(graph, state)
            # The arithmetic of the usual host-side normalisation, (x / 255 - mean) / std in
            # float32; inside the compiled step (one compilation) it may differ in the last bit.
            x = (images * (1.0 / 255.0) - jnp.asarray(mean32)) / jnp.asarray(std32)
            targets = None if target == "pred" else classes
            maps, logits = explain_exits(net, x, targets=targets, method=method,
                                         exits=self.exits, return_logits=True)
            extra = tuple(explain_exits(net, x, targets=targets, method=m, exits=self.exits)
                          for m in compare)
            return maps, logits, extra

        s = self.image_size
        images = jax.ShapeDtypeStruct((self.batch_size, s, s, 3), jnp.float32,
                                      sharding=self._batch)
        classes = jax.ShapeDtypeStruct((self.batch_size,), jnp.int32, sharding=self._batch)
        jitted = jax.jit(step, in_shardings=(self._replicated, self._batch, self._batch),
                         out_shardings=(per_exit, per_exit, (per_exit,) * len(compare)))
        start = time.perf_counter()
        self._compiled = jitted.lower(self._state, images, classes).compile()
        self.compile_seconds = time.perf_counter() - start

    def put(self, images: np.ndarray, classes: np.ndarray | None = None
            ) -> tuple[jax.Array, jax.Array, int]:
        """Pad a batch to the step's shape and place it on the devices, sharded.

        Args:
          images: (n, S, S, 3) float32 on the 0..255 scale, ``n <= batch_size``.
          classes: (n,) classes to explain (ignored for target ``"pred"``).

        Returns:
          ``(images, classes, n)`` on the devices, ready for :meth:`compute`.
        """
        n = len(images)
        if not 0 < n <= self.batch_size:
            raise ValueError(f"a batch holds 1..{self.batch_size} images, got {n}")
        x = np.zeros((self.batch_size, *images.shape[1:]), np.float32)
        x[:n] = images
        c = np.zeros((self.batch_size,), np.int32)
        if classes is not None:
            c[:n] = classes
        return jax.device_put(x, self._batch), jax.device_put(c, self._batch), n

    def compute(self, images: jax.Array, classes: jax.Array, n: int
                ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        """Run the compiled step and bring the first ``n`` results back to the host.

        Returns:
          ``(maps, logits, compared)``: (K, n, S, S) float32 maps, (K, n, C) float32 logits,
          and one (K, n, S, S) array per compared method.
        """
        maps, logits, extra = self._compiled(self._state, images, classes)
        return (np.asarray(maps)[:, :n], np.asarray(logits)[:, :n],
                [np.asarray(e)[:, :n] for e in extra])

    def __call__(self, images: np.ndarray, classes: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        """:meth:`put` then :meth:`compute`, for up to ``batch_size`` images."""
        return self.compute(*self.put(images, classes))
