"""What every adapter shares: layer paths, and the recorder that taps layers during a trace."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax

__all__ = ["Edit", "LayerPath", "Recorder", "call_head", "normalize_layer_path",
           "unknown_layer_error"]

LayerPath = tuple[str, ...]
Edit = Callable[[jax.Array], jax.Array]


def normalize_layer_path(layer: str | Sequence[Any]) -> LayerPath:
    """``"a/b/0"`` or ``("a", "b", 0)`` -> ``("a", "b", "0")``.

    Args:
      layer: a '/'-separated module path or a sequence of its parts.

    Returns:
      The path as a tuple of strings.

    Raises:
      TypeError: neither a string nor a sequence.
      ValueError: an empty path.
    """
    if isinstance(layer, str):
        parts = tuple(p for p in layer.split("/") if p)
    elif isinstance(layer, Sequence):
        parts = tuple(str(p) for p in layer)
    else:
        raise TypeError(f"target_layer must be a '/'-separated path or a tuple of path parts, "
                        f"got {type(layer).__name__}")
    if not parts:
        raise ValueError("target_layer is empty; name a layer by its module path, e.g. 'head'")
    return parts


def unknown_layer_error(layer: LayerPath, available: Sequence[LayerPath]) -> ValueError:
    """The error for a layer that does not exist, listing the ones that do."""
    names = ["/".join(p) for p in available if p]
    shown = "\n  ".join(names[:200]) + ("\n  ..." if len(names) > 200 else "")
    return ValueError(f"target layer {'/'.join(layer)!r} does not exist in this model. "
                      f"The layers are ({len(names)}):\n  {shown}")


class Recorder:
    """Collects tapped outputs during one trace; refuses layers that run twice.

    Args:
      layers: the tapped layers' paths.
      edits: ``edits[i]`` is applied to layer i's output on its way to the rest of the network.
    """

    def __init__(self, layers: Sequence[LayerPath], edits: Sequence[Edit]):
        self.index = {layer: i for i, layer in enumerate(layers)}
        self.edits = edits
        self.outputs: list[Any] = [None] * len(layers)

    def record(self, layer: LayerPath, output: jax.Array) -> jax.Array:
        """Keep ``output`` as layer ``layer``'s activations; return its edited value."""
        i = self.index[layer]
        if self.outputs[i] is not None:
            raise RuntimeError(
                f"layer {'/'.join(layer)!r} runs more than once in one forward pass, so its "
                "output is not one feature map; choose a layer that runs once")
        if not isinstance(output, jax.Array):
            raise TypeError(f"layer {'/'.join(layer)!r} returns {type(output).__name__}, not an "
                            "array; choose a layer whose output is a single (B, h, w, C) array")
        self.outputs[i] = output
        return self.edits[i](output)

    def collected(self) -> list[jax.Array]:
        """Every tapped layer's activations, in the order of ``layers``."""
        for layer, i in self.index.items():
            if self.outputs[i] is None:
                raise ValueError(f"layer {'/'.join(layer)!r} exists but was not called in the "
                                 "forward pass; choose a layer the model uses")
        return self.outputs


def call_head(path: LayerPath, call: Any, args: tuple, kwargs: dict,
              heads: Sequence[tuple[LayerPath, LayerPath]], recorder: Any) -> Any:
    """One intercepted module call of a multi-exit model, for the frameworks whose interceptors
    see ``(module path, next call, args, kwargs)`` (Flax Linen, Haiku).

    Args:
      path: the called module's path.
      call: the module's own call.
      args, kwargs: its arguments.
      heads: each exit's ``(entry, exit)`` module paths (equal for a one-module head).
      recorder: ``recorder.enter(i, x)`` takes exit i's features (the entry module's first
        argument) and returns what that module is fed instead; ``recorder.leave(i, y)`` takes
        the exit module's output, the logits (:class:`jaxcam.adapters.exits.HeadRecorder`).

    Returns:
      The module's output.

    Raises:
      TypeError: a head's entry module is not called on one array, or its exit module does not
        return one.
    """
    name = "/".join(path)
    for i, (entry, _) in enumerate(heads):
        if path == entry:
            if not args or not isinstance(args[0], jax.Array):
                raise TypeError(f"head module {name!r} is not called on one array as its first "
                                "argument; name a head module whose input is the exit's "
                                "feature map")
            args = (recorder.enter(i, args[0]), *args[1:])
    output = call(*args, **kwargs)
    for i, (_, last) in enumerate(heads):
        if path == last:
            if not isinstance(output, jax.Array):
                raise TypeError(f"head module {name!r} returns {type(output).__name__}, not an "
                                "array of logits")
            recorder.leave(i, output)
    return output
