"""The per-call input checks of the explainers.

They run on the host whenever the inputs are host values, so that a call with NumPy images and
classes never waits for the device; the device-side finiteness flag is read only for device
images (:func:`read_device_flag`, the one place a call waits).
"""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np

from jaxcam._arrays import as_jax
from jaxcam.targets import TargetSpec, check_target_range, prepare_targets

__all__ = ["NONFINITE_MESSAGE", "check_after_dispatch", "check_finite_on_host", "check_images",
           "check_keywords", "keyword_names", "prepare_exit_targets", "read_device_flag",
           "strict_keywords"]

F = TypeVar("F", bound=Callable[..., Any])

NONFINITE_MESSAGE = ("images contain NaN or infinite values; explanations of them would be NaN. "
                     "Clean the input (e.g. jnp.nan_to_num) first")


def keyword_names(fn: Callable[..., Any], skip: int = 0) -> tuple[str, ...]:
    """The names ``fn`` takes by keyword, in order (``**kwargs`` excluded).

    Args:
      fn: a function or method.
      skip: leading parameters not to list (``self``).
    """
    params = list(inspect.signature(fn).parameters.values())[skip:]
    return tuple(p.name for p in params
                 if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


def check_keywords(where: str, given: Iterable[str], valid: Sequence[str],
                   extra: Sequence[str] = (), extra_label: str = "") -> None:
    """Refuse keyword arguments ``where`` does not take, naming the ones it does.

    A misspelt keyword swallowed by ``**options`` would be silently ignored (``target=3`` for
    ``targets=3`` explains the top class instead): it is an error, with the closest valid name.

    Args:
      where: the callee, for the message (``"explain()"``).
      given: the keywords passed.
      valid: the callee's own keywords.
      extra: further valid keywords (a method's options).
      extra_label: what ``extra`` are, for the message.

    Raises:
      TypeError: an unknown keyword.
    """
    allowed = (*valid, *extra)
    unknown = [k for k in given if k not in allowed]
    if not unknown:
        return
    close = difflib.get_close_matches(unknown[0], allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    names = ", ".join(unknown)
    listing = ", ".join(valid)
    if extra_label:
        listing += f"; {extra_label}: {', '.join(extra) or 'none'}"
    kind = "option(s) or keyword argument(s)" if extra_label else "keyword argument(s)"
    raise TypeError(f"{where} got unknown {kind} {names}{hint}. Its keyword arguments are: "
                    f"{listing}")


def strict_keywords(fn: F) -> F:
    """``fn`` with Python's bare "unexpected keyword argument" replaced by
    :func:`check_keywords`' message (the valid names, and the closest one).

    Only the keywords' names are checked (a set difference per call); ``fn`` must not take
    ``**kwargs``.
    """
    valid = keyword_names(fn)
    valid_set = frozenset(valid)
    method = bool(valid) and valid[0] == "self"
    shown = valid[1:] if method else valid
    name = fn.__name__

    @functools.wraps(fn)
    def checked(*args: Any, **kwargs: Any) -> Any:
        if kwargs and not valid_set.issuperset(kwargs):
            # A method is named after the instance's class (GradCAM, not its base BaseCAM).
            owner = type(args[0]).__name__ if method and args else ""
            where = (f"{owner}()" if name == "__init__" else
                     f"calling a {owner}" if name == "__call__" else
                     f"{owner}.{name}()" if owner else f"{name}()")
            check_keywords(where, kwargs, shown)
        return fn(*args, **kwargs)

    return checked  # type: ignore[return-value]


def check_images(images: Any) -> jax.Array:
    """(B, H, W, C) float images as a jax.Array, or a clear error.

    Args:
      images: NumPy, JAX or DLPack images.

    Returns:
      The images as a ``jax.Array``.

    Raises:
      ValueError: not rank 4, or an empty batch.
      TypeError: not floating point.
    """
    images = as_jax(images)
    if images.ndim != 4:
        raise ValueError(f"images must be (B, H, W, C) NHWC, rank 4; got shape {images.shape}"
                         + (" (add a batch axis: images[None])" if images.ndim == 3 else ""))
    if images.shape[0] == 0:
        raise ValueError("images is an empty batch (B = 0); pass at least one image")
    if not jnp.issubdtype(images.dtype, jnp.floating):
        raise TypeError(f"images must be floating point (normalised as the model expects), "
                        f"got {images.dtype}")
    return images


def check_finite_on_host(images: Any, check_finite: bool) -> bool:
    """Check NumPy ``images`` for NaN/inf on the host, before the call.

    Args:
      images: the images as the caller passed them.
      check_finite: whether the caller wants the check at all.

    Returns:
      True when the check is done (or not wanted); False when it must run on the device
      (``images`` is a ``jax.Array`` or a DLPack tensor), inside the jitted call.

    Raises:
      ValueError: NumPy images hold NaN or inf.
    """
    if not check_finite:
        return True
    if isinstance(images, (np.ndarray, np.generic)):
        if not np.isfinite(images).all():
            raise ValueError(NONFINITE_MESSAGE)
        return True
    return False


def read_device_flag(flag: jax.Array) -> bool:
    """The one place a call waits for the device: reading a flag the jitted call computed."""
    return bool(flag)


def check_after_dispatch(classes: Any, num_classes: int, finite: jax.Array,
                         finite_checked: bool) -> None:
    """The checks that need the dispatched call: the class range (against the output's width,
    known without waiting) and, for device images, the finiteness flag.

    Under an outer ``jax.jit``/``jax.vmap`` the classes and the flag are traced and cannot be
    checked on the host; the checks are skipped there.

    Args:
      classes: the (B,) or (K, B) classes (NumPy, ``jax.Array``, tracer) or None.
      num_classes: the width of the model output the classes index.
      finite: the jitted call's ``all(isfinite(images))``.
      finite_checked: what :func:`check_finite_on_host` returned.

    Raises:
      ValueError: a class out of range, or non-finite images.
    """
    if classes is not None and not isinstance(classes, jax.core.Tracer):
        check_target_range(classes, num_classes)
    # Device images: reading the flag waits for this call's result, which is what the caller
    # does next anyway; what it costs is the overlap of the caller's next host work with this
    # call's device work. Raising from inside the computation instead (jax.debug.callback,
    # io_callback) makes XLA:CPU run the whole call synchronously (measured: the call returned
    # only when done) and buries the message in a runtime error; checkify's error must be read
    # on the host all the same. NumPy images were checked on the host and never wait here, and
    # check_finite=False skips the check for callers who keep everything on the device.
    if not finite_checked and not isinstance(finite, jax.core.Tracer):
        if not read_device_flag(finite):
            raise ValueError(NONFINITE_MESSAGE)


def prepare_exit_targets(targets: Any, n_exits: int, batch: int
                         ) -> tuple[TargetSpec, np.ndarray | jax.Array | None]:
    """Targets for every exit: None/int/(B,)/callable as for ``explain``, or (K, B) classes.

    The (K, B) classes stay NumPy when they came from the host (see ``prepare_targets``).

    Args:
      targets: as :func:`jaxcam.explain_exits` takes them.
      n_exits: K, the number of explained exits.
      batch: B.

    Returns:
      ``(spec, classes)`` with classes ``(K, B)`` or None.

    Raises:
      ValueError: per-exit targets of the wrong shape.
    """
    if (isinstance(targets, (list, tuple)) and targets
            and all(isinstance(t, (list, tuple, np.ndarray, jax.Array)) for t in targets)):
        targets = np.asarray(targets)  # nested lists: (K, B) classes
    if hasattr(targets, "ndim") and targets.ndim == 2:
        if tuple(targets.shape) != (n_exits, batch):
            raise ValueError(f"per-exit targets have shape {tuple(targets.shape)}; expected "
                             f"({n_exits}, {batch}) for {n_exits} exits and {batch} images")
        rows = targets if isinstance(targets, jax.core.Tracer) else np.asarray(targets)
        specs = [prepare_targets(t, batch) for t in rows]
        stack = np.stack if isinstance(rows, np.ndarray) else jnp.stack
        return specs[0][0], stack([c for _, c in specs])
    spec, classes = prepare_targets(targets, batch)
    if classes is not None:
        broadcast = np.broadcast_to if isinstance(classes, np.ndarray) else jnp.broadcast_to
        classes = broadcast(classes, (n_exits, batch))
    return spec, classes
