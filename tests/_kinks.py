"""How close a function's ReLUs come to their kink, for comparisons of float32 gradients.

A ReLU's gradient jumps at zero. Where a ReLU input lies within float32 rounding of zero, two
correct programs (two batch compositions of the same model, say) may take different sides, and a
Grad-CAM built on that gradient can move by several percent. :func:`kink_margins` measures, per
image, the smallest ``|x|`` over every ``max(x, 0)`` a function evaluates, so a test can tell
such images from real disagreements.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.extend.core as jex
import numpy as np

from jaxcam.extend import interpreter as interp

_INLINED = interp.CALL_PRIMITIVES | {"custom_jvp_call", "custom_vjp_call", "remat", "remat2"}


def _relu_operand(eqn: jex.JaxprEqn) -> int | None:
    """The index of ``x`` if ``eqn`` is ``max(x, 0)`` or ``max(0, x)``, else None."""
    if eqn.primitive.name != "max":
        return None
    for i, atom in enumerate(eqn.invars):
        if isinstance(atom, jex.Literal) and np.ndim(atom.val) == 0 and atom.val == 0:
            return 1 - i
    return None


def kink_margins(fn: Callable[[Any], Any], inputs: Any) -> np.ndarray:
    """The smallest ``|x|`` over every ReLU ``max(x, 0)`` that ``fn(inputs)`` evaluates, per
    batch element (``inf`` where none); ``fn`` is evaluated eagerly, ReLU inputs are assumed to
    keep the batch axis first."""
    batch = len(inputs)
    margins = np.full(batch, np.inf)

    def rule(eqn: jex.JaxprEqn, invals: list[Any]) -> list[Any] | None:
        operand = _relu_operand(eqn)
        if operand is not None:
            x = np.abs(np.asarray(invals[operand]))
            if x.ndim and x.shape[0] == batch:
                np.minimum(margins, x.reshape(batch, -1).min(axis=1), out=margins)
        elif eqn.primitive.name in _INLINED and (found := interp.body(eqn)) is not None:
            return interp.eval_jaxpr(found[0], found[1], invals, rule)
        return None

    closed = jax.make_jaxpr(fn)(inputs)
    interp.eval_jaxpr(closed.jaxpr, closed.consts, jax.tree.leaves(inputs), rule)
    return margins


def assert_exit_maps_close(got: np.ndarray, expected: Any, model: Any, inputs: Any,
                           atol: float = 1e-5, margin: float = 1e-6, most: int = 6) -> None:
    """Every exit's ``(K, B, H, W)`` maps of a multi-exit model (``exit_features``/``classify``)
    equal to ``atol``, except images with a ReLU input within ``margin`` of zero in that exit's
    head, where two float32 programs may take either side of the kink; those are printed, and
    more than ``most`` of them per exit is a failure (the comparison would be void)."""
    expected = np.asarray(expected)
    features = model.exit_features(jax.numpy.asarray(inputs))
    assert got.shape == expected.shape and len(features) == got.shape[0]
    for k, f in enumerate(features):
        margins = kink_margins(lambda f, k=k: model.classify(k, f), f)
        at_kink = margins < margin
        print(f"exit {k}: images at a kink of the head: {np.flatnonzero(at_kink)} (margins "
              f"{np.sort(margins)[:3]})")
        assert at_kink.sum() <= most, f"exit {k}: kinks everywhere, the comparison is void"
        np.testing.assert_allclose(got[k][~at_kink], expected[k][~at_kink], atol=atol,
                                   err_msg=f"exit {k}")
