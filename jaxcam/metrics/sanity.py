"""Sanity checks for saliency maps (Adebayo et al., "Sanity Checks for Saliency Maps", 2018).

* Cascading model-parameter randomisation: the parameters of a Flax NNX model are
  re-initialised layer by layer from the top (output) down, cumulatively, and the images are
  explained after each step. A map that depends on the model changes as layers are randomised;
  one that stays similar (high rank correlation / SSIM to the original) is not explaining the
  model.
* Data (label) randomisation: the maps of a model trained on randomly permuted labels, or, as a
  cheaper proxy, the maps for a random other class, compared with the maps for the true class.

Both drivers are host-level loops (one explanation per step, each as jitted as ``explain_fn``
is); the comparisons (:func:`compare_maps`) are jitted JAX functions.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxcam.adapters import nnx_child, nnx_layer_paths, normalize_layer_path
from jaxcam.metrics.similarity import spearman_rank_correlation, ssim

__all__ = [
    "ExplainFn",
    "Reinit",
    "MapSimilarity",
    "CascadingRandomization",
    "LabelRandomization",
    "compare_maps",
    "default_reinit",
    "cascading_randomization",
    "label_randomization",
    "random_other_classes",
]

ExplainFn = Callable[[Any, jax.Array, Any], jax.Array]
"""``explain_fn(model, images, targets) -> (B, H, W)`` maps, e.g.
``lambda m, x, t: jaxcam.explain(m, x, target_layer="features", targets=t)``."""

Reinit = Callable[[jax.Array, tuple[str, ...], jax.Array], jax.Array]
"""``reinit(key, path, value) -> new value`` for one parameter at ``path`` (its module path and
name), of ``value``'s shape and dtype."""


class MapSimilarity(NamedTuple):
    """Per-image similarity of two batches of maps."""

    spearman: jax.Array
    """``(..., B)`` Spearman rank correlation."""
    ssim: jax.Array
    """``(..., B)`` mean SSIM (NaN where the maps are smaller than the 11 px window)."""


class CascadingRandomization(NamedTuple):
    """The result of :func:`cascading_randomization`."""

    steps: tuple[str, ...]
    """``("original", layer_order[0], ...)``: what is randomised (cumulatively) at each step."""
    maps: jax.Array
    """``(S + 1, B, H, W)`` maps after each step; ``maps[0]`` is the original model's."""
    spearman: jax.Array
    """``(S + 1, B)`` rank correlation of each step's maps with ``maps[0]``."""
    ssim: jax.Array
    """``(S + 1, B)`` SSIM of each step's maps with ``maps[0]``."""


class LabelRandomization(NamedTuple):
    """The result of :func:`label_randomization`."""

    maps: jax.Array
    """``(B, H, W)`` maps for the true labels."""
    maps_random: jax.Array
    """``(B, H, W)`` maps for the random classes, or from the random-label model."""
    random_targets: jax.Array
    """``(B,)`` the classes explained in ``maps_random``."""
    spearman: jax.Array
    """``(B,)`` rank correlation of ``maps`` and ``maps_random``."""
    ssim: jax.Array
    """``(B,)`` SSIM of ``maps`` and ``maps_random``."""


_SSIM_WINDOW = 11


def compare_maps(maps_a: jax.Array, maps_b: jax.Array) -> MapSimilarity:
    """Adebayo et al.'s similarity of two batches of maps: Spearman rank correlation and SSIM.

    Both per image (:func:`~jaxcam.metrics.spearman_rank_correlation`,
    :func:`~jaxcam.metrics.ssim` on maps in ``[0, 1]``). Maps smaller than SSIM's 11-pixel
    window get NaN SSIM.

    Args:
        maps_a: ``(B, H, W)`` maps, e.g. of the original model / true class.
        maps_b: ``(B, H, W)`` maps, e.g. of the randomised model / random class.

    Returns:
        :class:`MapSimilarity` of ``(B,)`` arrays.
    """
    rho = spearman_rank_correlation(maps_a, maps_b)
    if min(jnp.shape(maps_a)[1:]) >= _SSIM_WINDOW:
        structural = ssim(maps_a, maps_b)
    else:
        structural = jnp.full(rho.shape, jnp.nan, jnp.float32)
    return MapSimilarity(rho, structural)


def default_reinit(key: jax.Array, path: tuple[str, ...], value: jax.Array) -> jax.Array:
    """Flax's default initialiser for a parameter, chosen by its name.

    ``kernel`` (rank >= 2): LeCun normal (a normal truncated at 2 standard deviations, variance
    ``1 / fan_in`` with the fan-in over all axes but the last: the distribution of Flax's default
    for ``Linear`` and ``Conv``, drawn in fixed-size chunks so that one compilation serves every
    shape); ``bias``: zeros; ``scale``: ones (norm layers). Any other parameter: a normal draw
    with the parameter's own mean and standard deviation.

    Args:
        key: PRNG key.
        path: module path and parameter name; only the last part is used.
        value: the current value (its shape and dtype are kept).

    Returns:
        The new value.
    """
    name = path[-1] if path else ""
    value = jnp.asarray(value)
    shape, dtype, size = value.shape, value.dtype, value.size
    if name == "kernel" and value.ndim >= 2:
        # jax.nn.initializers.lecun_normal: truncated normal on [-2, 2] scaled to variance
        # 1 / fan_in (0.8796... is the standard deviation of the truncated unit normal).
        fan_in = size // shape[-1]
        std = (1.0 / fan_in) ** 0.5 / 0.87962566103423978
        return (std * _draws(key, size, truncated=True)).reshape(shape).astype(dtype)
    if name == "bias":
        return jnp.zeros(shape, dtype)
    if name == "scale":
        return jnp.ones(shape, dtype)
    mean, std = jnp.mean(value), jnp.std(value)
    return (mean + std * _draws(key, size, truncated=False)).reshape(shape).astype(dtype)


_CHUNK = 1 << 16


@functools.partial(jax.jit, static_argnums=1)
def _chunk_draws(key: jax.Array, truncated: bool) -> jax.Array:
    if truncated:
        return jax.random.truncated_normal(key, -2.0, 2.0, (_CHUNK,), jnp.float32)
    return jax.random.normal(key, (_CHUNK,), jnp.float32)


def _draws(key: jax.Array, n: int, *, truncated: bool) -> jax.Array:
    """``n`` standard (truncated) normal draws from fixed-size chunks, so that one compilation
    serves every parameter shape (threefry compiles slowly on CPU; one compile per shape adds up).
    """
    chunks = [_chunk_draws(jax.random.fold_in(key, i), truncated)
              for i in range(max(1, -(-n // _CHUNK)))]
    return jnp.concatenate(chunks)[:n] if len(chunks) > 1 else chunks[0][:n]


def _submodule(model: Any, path: tuple[str, ...]) -> Any:
    node = model
    try:
        for part in path:
            node = nnx_child(node, part)
    except (AttributeError, IndexError, KeyError, ValueError) as err:
        names = ", ".join("/".join(p) for p in nnx_layer_paths(model) if p)
        raise ValueError(f"module {'/'.join(path)!r} does not exist in this model; the modules "
                         f"are: {names}") from err
    return node


def cascading_randomization(explain_fn: ExplainFn, model: Any, images: jax.Array, *,
                            key: jax.Array, layer_order: Sequence[str | Sequence[str]],
                            targets: Any = None,
                            reinit: Reinit | None = None) -> CascadingRandomization:
    """Adebayo et al.'s cascading model-parameter randomisation test for a Flax NNX model.

    A copy of ``model`` (``nnx.clone``; the model itself is never edited) has the ``nnx.Param``
    parameters of ``layer_order[0]`` re-initialised, then also those of ``layer_order[1]``, and so
    on (cumulative, top first); after each step the images are explained with the same
    ``targets``. BatchNorm running statistics (``nnx.BatchStat``) are left as they are.

    Pass fixed ``targets`` (the original model's predicted or true classes): with ``None`` each
    randomised model would explain its own top class.

    Reference: Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018, section 3.1.

    Args:
        explain_fn: ``(model, images, targets) -> (B, H, W)`` maps in ``[0, 1]``.
        model: a ``flax.nnx.Module``.
        images: ``(B, H, W, C)``.
        key: PRNG key; step ``i`` uses ``fold_in(key, i)``, so results are reproducible.
        layer_order: module paths (``/``-separated, as ``jaxcam.explain``'s ``target_layer``),
            top (output side) first.
        targets: passed to ``explain_fn`` unchanged at every step.
        reinit: ``(key, path, value) -> new value`` per parameter; default
            :func:`default_reinit` (Flax's default initialisers by parameter name).

    Returns:
        :class:`CascadingRandomization`: the maps of every step and their rank correlation and
        SSIM with the original maps.
    """
    from flax import nnx

    if not isinstance(model, nnx.Module):
        raise TypeError(f"cascading_randomization needs a flax.nnx.Module, got "
                        f"{type(model).__name__}")
    reinit = default_reinit if reinit is None else reinit
    paths = [normalize_layer_path(p) for p in layer_order]
    work = nnx.clone(model)
    maps = [jnp.asarray(explain_fn(work, images, targets), jnp.float32)]
    for step, path in enumerate(paths):
        sub = _submodule(work, path)
        step_key = jax.random.fold_in(key, step)
        params = [(p, v) for p, v in nnx.iter_graph(sub) if isinstance(v, nnx.Param)]
        for i, (p, var) in enumerate(params):
            full_path = (*path, *(str(x) for x in p))
            var.set_value(reinit(jax.random.fold_in(step_key, i), full_path, var.get_value()))
        maps.append(jnp.asarray(explain_fn(work, images, targets), jnp.float32))
    # One comparison per step, each of the same (B, H, W) shape: compiled once whatever S is.
    similarity = [compare_maps(maps[0], m) for m in maps]
    return CascadingRandomization(("original", *("/".join(p) for p in paths)), jnp.stack(maps),
                                  jnp.stack([s.spearman for s in similarity]),
                                  jnp.stack([s.ssim for s in similarity]))


def random_other_classes(key: jax.Array, targets: jax.Array, num_classes: int) -> jax.Array:
    """A uniformly random class different from each target: ``(t + U{1..K-1}) mod K``.

    Args:
        key: PRNG key.
        targets: ``(B,)`` int classes.
        num_classes: ``K`` (at least 2).

    Returns:
        ``(B,)`` int32 classes, each different from its target.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    targets = jnp.asarray(targets, jnp.int32)
    shift = jax.random.randint(key, targets.shape, 1, num_classes, jnp.int32)
    return (targets + shift) % num_classes


def label_randomization(explain_fn: ExplainFn, model: Any, images: jax.Array,
                        targets: jax.Array, *, key: jax.Array | None = None,
                        num_classes: int | None = None,
                        random_label_model: Any = None) -> LabelRandomization:
    """Adebayo et al.'s data randomisation test, or its random-class proxy.

    With ``random_label_model`` (the same architecture trained on randomly permuted labels, the
    paper's test): its maps for ``targets`` are compared with ``model``'s. Without it: ``model``'s
    maps for a random class other than each target (:func:`random_other_classes`, needs ``key``
    and ``num_classes``) are compared with its maps for the targets. Either way a method whose
    maps barely change (rank correlation / SSIM near 1) does not depend on the label the model
    learnt.

    Reference: Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018, section 3.2.

    Args:
        explain_fn: ``(model, images, targets) -> (B, H, W)`` maps; targets are ``(B,)`` ints.
        model: the trained model (any kind ``explain_fn`` accepts).
        images: ``(B, H, W, C)``.
        targets: ``(B,)`` true labels.
        key: PRNG key for the random classes (unused with ``random_label_model``).
        num_classes: number of classes (unused with ``random_label_model``).
        random_label_model: optional model trained on random labels.

    Returns:
        :class:`LabelRandomization`: both batches of maps, the random classes, and their rank
        correlation and SSIM per image.
    """
    targets = jnp.asarray(targets, jnp.int32)
    maps = jnp.asarray(explain_fn(model, images, targets), jnp.float32)
    if random_label_model is not None:
        random_targets = targets
        maps_random = explain_fn(random_label_model, images, targets)
    else:
        if key is None or num_classes is None:
            raise ValueError("without random_label_model, pass key and num_classes to draw the "
                             "random classes")
        random_targets = random_other_classes(key, targets, num_classes)
        maps_random = explain_fn(model, images, random_targets)
    maps_random = jnp.asarray(maps_random, jnp.float32)
    similarity = compare_maps(maps, maps_random)
    return LabelRandomization(maps, maps_random, random_targets, similarity.spearman,
                              similarity.ssim)
