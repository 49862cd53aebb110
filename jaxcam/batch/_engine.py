"""The device side: one jitted, SPMD explain step over every local device.

A ``jax.sharding.Mesh`` with one axis, ``'data'``, spans the process's devices; each batch is
sharded along it, the model's parameters are replicated, and the step (normalise, then
``jaxcam.explain_exits`` for the method and any compared methods) is compiled once, ahead of
time, for one batch shape. Shorter batches are padded to that shape and the padding dropped, so
no input can trigger a second compilation. By default each device computes its examples in
chunks of 32, each chunk the same computation, so that results are bit-identical whatever the
batch size, the device count or an example's position in its batch.
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
      micro_batch: examples each device computes together: the program is compiled for one
        chunk of ``micro_batch`` per device (``jax.shard_map``: each device explains its own
        chunk), and a batch is as many calls of it as it has chunks; ``batch_size`` is rounded
        up to a multiple of ``micro_batch`` times the devices. An example's arithmetic is then
        the same whatever the batch size or the device count (kernels chosen for another batch
        shape differ: up to 5e-2 between batch 64 and 7 on an H200) and, measured on CPU and
        H200, whatever its slot: results are bit-identical.
        Default 32: the speed of batching on CPU (all exits, cifar10_anytime batch 64: 75 vs
        74 images/s; imagenet_step4 batch 32: 11.0 vs 11.7), on an H200 0.45x (cifar10_anytime
        batch 64: 2389 vs 5278 images/s) to 1.0x (imagenet_step4 batch 32). None: the whole
        batch at once, as one SPMD program (results then change with the batch size).
      spare_slot: compute one blank example after each chunk of ``micro_batch`` and drop it,
        so that the rows of a vectorisation remainder, which batched CPU kernels may compute in
        another order (issue 14 saw only the last slot of a batch differ; not reproduced on the
        CPUs and the H200 measured, where chunks of 32 are exact under any shift), are never a
        real example's. Costs about 12% on CPU, hence off by default.

    Attributes:
      batch_size: the padded per-step batch.
      compilations: how many times the step was traced and compiled (1 after construction).
      compile_seconds: time spent compiling.
    """

    def __init__(self, model: Any, *, image_size: int, mean: Sequence[float],
                 std: Sequence[float],
                 method: str = "gradcam", exits: Sequence[int], target: str = "pred",
                 compare: Sequence[str] = (), batch_size: int = 32,
                 devices: Sequence[jax.Device] | None = None, micro_batch: int | None = 32,
                 spare_slot: bool = False):
        import time

        from flax import nnx

        if target not in ("pred", "index"):
            raise ValueError(f"target must be 'pred' or 'index', got {target!r}")
        devices = list(jax.local_devices() if devices is None else devices)
        self.mesh = Mesh(np.asarray(devices, dtype=object), ("data",))
        n = len(devices)
        self.micro_batch = None if micro_batch is None else max(1, int(micro_batch))
        unit = n * (self.micro_batch or 1)
        self.batch_size = -(-max(1, int(batch_size)) // unit) * unit
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

        def explain(state: Any, images: jax.Array, classes: jax.Array
                    ) -> tuple[jax.Array, jax.Array, tuple[jax.Array, ...]]:
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

        m = self.micro_batch
        spare = bool(spare_slot)
        # The compiled program explains one chunk of ``m`` examples per device; a batch is
        # several calls of it, so no program ever sees another batch shape.
        self._unit = n * m if m is not None else self.batch_size

        def local(state: Any, images: jax.Array, classes: jax.Array
                  ) -> tuple[jax.Array, jax.Array, tuple[jax.Array, ...]]:
            # One device's chunk, explained on its own (no partitioner between the devices).
            if spare:  # one blank example after the chunk takes the vectorisation remainder
                images = jnp.concatenate([images, jnp.zeros_like(images[:1])])
                classes = jnp.concatenate([classes, jnp.zeros_like(classes[:1])])
                return jax.tree.map(lambda a: a[:, :m], explain(state, images, classes))
            return explain(state, images, classes)

        def step(state: Any, images: jax.Array, classes: jax.Array
                 ) -> tuple[jax.Array, jax.Array, tuple[jax.Array, ...]]:
            self.compilations += 1  # runs only while tracing: once per compilation
            if m is None:
                return explain(state, images, classes)
            spec = PartitionSpec("data")
            return jax.shard_map(local, mesh=self.mesh, in_specs=(PartitionSpec(), spec, spec),
                                 out_specs=(PartitionSpec(None, "data"),) * 2
                                 + ((PartitionSpec(None, "data"),) * len(compare),),
                                 check_vma=False)(state, images, classes)

        s = self.image_size
        images = jax.ShapeDtypeStruct((self._unit, s, s, 3), jnp.float32, sharding=self._batch)
        classes = jax.ShapeDtypeStruct((self._unit,), jnp.int32, sharding=self._batch)
        jitted = jax.jit(step, in_shardings=(self._replicated, self._batch, self._batch),
                         out_shardings=(per_exit, per_exit, (per_exit,) * len(compare)))
        start = time.perf_counter()
        self._compiled = jitted.lower(self._state, images, classes).compile()
        self.compile_seconds = time.perf_counter() - start

    def put(self, images: np.ndarray, classes: np.ndarray | None = None
            ) -> tuple[list[tuple[jax.Array, jax.Array]], int]:
        """Pad a batch to the step's shape and place it on the devices, sharded, chunk by
        chunk.

        Args:
          images: (n, S, S, 3) float32 on the 0..255 scale, ``n <= batch_size``.
          classes: (n,) classes to explain (ignored for target ``"pred"``).

        Returns:
          ``(chunks, n)``: the ``(images, classes)`` of each call of the compiled program, on
          the devices, and the number of real images; ready for :meth:`compute`.
        """
        n = len(images)
        if not 0 < n <= self.batch_size:
            raise ValueError(f"a batch holds 1..{self.batch_size} images, got {n}")
        u = self._unit
        used = -(-n // u) * u  # whole chunks of padding are not computed at all
        x = np.zeros((used, *images.shape[1:]), np.float32)
        x[:n] = images
        c = np.zeros((used,), np.int32)
        if classes is not None:
            c[:n] = classes
        return [(jax.device_put(x[k:k + u], self._batch), jax.device_put(c[k:k + u], self._batch))
                for k in range(0, used, u)], n

    def compute(self, chunks: list[tuple[jax.Array, jax.Array]], n: int
                ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        """Run the compiled program on each chunk and bring the first ``n`` results back.

        Returns:
          ``(maps, logits, compared)``: (K, n, S, S) float32 maps, (K, n, C) float32 logits,
          and one (K, n, S, S) array per compared method.
        """
        outs = [self._compiled(self._state, x, c) for x, c in chunks]  # all dispatched first
        maps = np.concatenate([np.asarray(o[0]) for o in outs], axis=1)[:, :n]
        logits = np.concatenate([np.asarray(o[1]) for o in outs], axis=1)[:, :n]
        extra = [np.concatenate([np.asarray(o[2][e]) for o in outs], axis=1)[:, :n]
                 for e in range(len(outs[0][2]))]
        return maps, logits, extra

    def __call__(self, images: np.ndarray, classes: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        """:meth:`put` then :meth:`compute`, for up to ``batch_size`` images."""
        return self.compute(*self.put(images, classes))
