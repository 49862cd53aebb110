"""PyTorch <-> Flax weight layouts, shared by the model packages' state-dict converters.

Convolution kernels are OIHW in PyTorch and HWIO in Flax (a depthwise (C, 1, k, k) kernel becomes
(k, k, 1, C)); linear kernels are (out, in) in PyTorch and (in, out) in Flax. Every other leaf
(biases, BatchNorm scale, shift and statistics) has the same layout in both.
"""

from __future__ import annotations

import numpy as np

__all__ = ["to_flax_layout", "to_torch_layout"]


def to_flax_layout(leaf: str, value: np.ndarray) -> np.ndarray:
    """A PyTorch tensor in the layout of the Flax leaf named ``leaf``.

    Args:
      leaf: the Flax parameter's name (``"kernel"`` is transposed, anything else is not).
      value: the PyTorch array.

    Returns:
      ``value`` in Flax's layout.
    """
    if leaf == "kernel" and value.ndim == 4:  # OIHW -> HWIO
        return np.transpose(value, (2, 3, 1, 0))
    if leaf == "kernel" and value.ndim == 2:  # (out, in) -> (in, out)
        return value.T
    return value


def to_torch_layout(leaf: str, value: np.ndarray) -> np.ndarray:
    """The inverse of :func:`to_flax_layout`.

    Args:
      leaf: the Flax parameter's name.
      value: the Flax array.

    Returns:
      ``value`` in PyTorch's layout.
    """
    if leaf == "kernel" and value.ndim == 4:  # HWIO -> OIHW
        return np.transpose(value, (3, 2, 0, 1))
    if leaf == "kernel" and value.ndim == 2:  # (in, out) -> (out, in)
        return value.T
    return value
