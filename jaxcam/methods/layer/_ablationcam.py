"""Ablation-CAM (Desai & Ramaswamy 2020), as pytorch-grad-cam 1.5.7 computes it."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxcam._arrays import map_in_chunks
from jaxcam.registry import LayerProbe, Method, register

# pytorch-grad-cam's AblationLayer: when the activations are not ReLU outputs (minimum != 0),
# an ablated channel is set this far below the minimum instead of to zero.
_PGC_ABLATION_OFFSET = 1e7


def _pgc_ablation_values(activations: jax.Array, pgc_batch_size: int | None) -> jax.Array:
    """``(C, B)`` values pgc writes into channel ``c`` of image ``b`` when ablating it."""
    n_channels = activations.shape[-1]
    minimum = jnp.min(activations, axis=(1, 2, 3))
    if pgc_batch_size is None:
        steps = jnp.ones((n_channels,), activations.dtype)
    else:
        # pgc's AblationLayer.__call__ loops over a forward batch writing min(output) - 1e7 in
        # place, so the k-th ablated copy of a batch sees the k-1 values written before it and
        # gets min - k * 1e7.
        steps = (jnp.arange(n_channels) % pgc_batch_size + 1).astype(activations.dtype)
    offsets = jnp.asarray(_PGC_ABLATION_OFFSET, activations.dtype) * steps
    values = minimum[None, :] - offsets[:, None]
    return jnp.where(minimum[None, :] == 0, jnp.zeros_like(values), values)


def ablationcam_weights(
    activations: jax.Array,
    head_score_fn: Callable[[jax.Array], jax.Array],
    *,
    batch_size: int | None = 32,
    ablation_value: float | None = None,
    pgc_batch_size: int | None = None,
) -> jax.Array:
    """Ablation-CAM channel weights: the relative score drop when a channel is ablated.

    ``w_c = (score - score_without_c) / score``, pgc's normalisation (note: divided by the
    signed score, so a negative score flips every weight's sign).

    The ablated channel is overwritten with pgc's value unless ``ablation_value`` is given:
    0 when the image's activations have minimum exactly 0 (ReLU outputs, the usual tap), else
    ``min - 1e7`` (pgc's choice for signed activations, not the paper's zero).

    Args:
        activations: the tapped layer's activations ``(B, h, w, C)``.
        head_score_fn: activations ``(B, h, w, C)`` -> scores ``(B,)``: the network from the
            tapped layer to the target score.
        batch_size: channels ablated together, each a batch of ``B`` activations; ``None`` does
            all channels at once. Only memory and speed depend on it.
        ablation_value: overwrite ablated channels with this constant instead of pgc's value.
        pgc_batch_size: reproduce a pgc 1.5.7 quirk exactly: with non-ReLU activations its
            ``AblationLayer`` writes ``min - k * 1e7`` into the k-th (1-based) copy of each
            forward batch of ``batch_size`` copies; pass pgc's ``batch_size`` (default 32) to
            match it. ``None`` uses ``min - 1e7`` for every channel. No effect when the minimum
            is 0 or when a ReLU follows the tap.

    Returns:
        ``(B, C)`` weights.
    """
    n_channels = activations.shape[-1]
    original = head_score_fn(activations)
    if ablation_value is None:
        values = _pgc_ablation_values(activations, pgc_batch_size)
    else:
        values = jnp.full((n_channels, activations.shape[0]), ablation_value, activations.dtype)

    def ablated_scores(channel_and_values: tuple[jax.Array, jax.Array]) -> jax.Array:
        channel, channel_values = channel_and_values
        is_ablated = jnp.arange(n_channels) == channel
        ablated = jnp.where(is_ablated, channel_values[:, None, None, None], activations)
        return head_score_fn(ablated)

    scores = map_in_chunks(ablated_scores, (jnp.arange(n_channels), values), batch_size)
    # A zero score has no relative drop to measure: its weights (and so its map) are zero, not
    # the NaN that pytorch-grad-cam's division gives.
    zero = original[:, None] == 0
    safe = jnp.where(zero, 1.0, original[:, None])
    return jnp.where(zero, 0.0, (original[:, None] - scores.T) / safe)


def ablationcam(
    activations: jax.Array,
    head_score_fn: Callable[[jax.Array], jax.Array],
    *,
    batch_size: int | None = 32,
    ablation_value: float | None = None,
    pgc_batch_size: int | None = None,
) -> jax.Array:
    """Ablation-CAM: activations weighted by the score drop when each channel is removed.

    Returns the raw map ``sum_c w_c * A_c`` at the activations' resolution, before the ReLU,
    normalisation and resizing pgc applies; see ``ablationcam_weights`` for the weights. pgc's
    experimental ``ratio_channels_to_ablate < 1`` is not supported (its default, 1, is).

    References:
        Desai & Ramaswamy, "Ablation-CAM: Visual Explanations for Deep Convolutional Network
        via Gradient-free Localization", WACV 2020.

    Args:
        activations: the tapped layer's activations ``(B, h, w, C)``.
        head_score_fn: activations ``(B, h, w, C)`` -> scores ``(B,)``, the rest of the network.
        batch_size: channels ablated together (see ``ablationcam_weights``).
        ablation_value: constant for ablated channels instead of pgc's rule.
        pgc_batch_size: reproduce pgc's in-batch ablation values (see ``ablationcam_weights``).

    Returns:
        ``(B, h, w)`` raw class activation maps.
    """
    weights = ablationcam_weights(
        activations,
        head_score_fn,
        batch_size=batch_size,
        ablation_value=ablation_value,
        pgc_batch_size=pgc_batch_size,
    )
    return jnp.einsum("bc,bhwc->bhw", weights, activations, precision=jax.lax.Precision.HIGHEST)


def _ablationcam_probe(probe: LayerProbe, *, batch_size: int | None = 32,
                       ablation_value: float | None = None,
                       pgc_batch_size: int | None = None) -> jax.Array:
    """The registry's entry point: Ablation-CAM of the probed layer."""
    return ablationcam(probe.activations, probe.score_activations, batch_size=batch_size,
                       ablation_value=ablation_value, pgc_batch_size=pgc_batch_size)


METHOD = register(Method(
    name="ablationcam", kind="layer_score", fn=_ablationcam_probe,
    summary="channels weighted by the relative score drop when each is ablated (no gradients)",
    paper="Desai & Ramaswamy, WACV 2020", uses_gradients=False, class_name="AblationCAM",
    options=("batch_size", "ablation_value", "pgc_batch_size")))
