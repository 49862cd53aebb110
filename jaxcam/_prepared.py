"""What ``Explainer`` and ``ExitExplainer`` share: a model prepared once, checked per call.

Preparing a model (splitting an NNX model, checking its layers) costs tens of milliseconds for a
network the size of MSD-Net; a prepared explainer does it once and reuses the adapter and the
snapshot of the weights on every call, refreshing them only when asked (:meth:`update`).
"""

from __future__ import annotations

from typing import Any

import jax

from jaxcam._checks import check_after_dispatch, check_finite_on_host, check_images

__all__ = ["PreparedExplainer"]


class PreparedExplainer:
    """A model adapter and its state, with the per-call input checks.

    Args:
      adapter: the model's adapter (``check_call``, ``new_state``).
      state: the adapter's state (the weights' snapshot, a Linen model's variables, or None).
      check_finite: raise if the images hold NaN or inf (see :class:`jaxcam.Explainer`).
    """

    def __init__(self, adapter: Any, state: Any, check_finite: bool):
        self._adapter = adapter
        self._state = state
        self.check_finite = check_finite

    def update(self, model: Any = None, *, variables: Any = None) -> None:
        """Take new weights of the same model.

        Args:
          model: for an NNX model: the model again (trained further), its ``nnx.split`` pair
            or its ``nnx.State``, of the structure the explainer was built for.
          variables: for a Linen model: the new variables.

        Raises:
          ValueError: an NNX model of another structure (build a new explainer for it).
          TypeError: the wrong argument for this explainer's kind of model, or a model that
            holds no weights (a function pair, a non-NNX multi-exit model).
        """
        self._state = self._adapter.new_state(model, variables)

    def _checked_images(self, images: Any) -> tuple[jax.Array, bool]:
        """The images as a ``jax.Array`` after the host checks, and whether finiteness was
        checked there (see :func:`jaxcam._checks.check_finite_on_host`)."""
        raw = images
        images = check_images(images)  # first: its errors say more than a NaN check's would
        finite_checked = check_finite_on_host(raw, self.check_finite)
        self._adapter.check_call(self._state, images)
        return images, finite_checked

    @staticmethod
    def _after_dispatch(classes: Any, logits: jax.Array, finite: jax.Array,
                        finite_checked: bool) -> None:
        """The checks that need the dispatched call (class range, device finiteness flag)."""
        check_after_dispatch(classes, logits.shape[-1], finite, finite_checked)
