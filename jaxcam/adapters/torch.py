"""PyTorch modules run as JAX through torchax, tapped with forward hooks.

torchax (https://github.com/google/torchax) runs a ``torch.nn.Module``'s forward on JAX arrays:
inside its environment every torch operator is lowered to ``jax.numpy``/``lax``, so the forward
can be traced, jitted and differentiated by JAX. The module's parameters and buffers are the
adapter's state (a dict of ``jax.Array`` by their ``state_dict`` names), substituted into the
module with ``torch.func.functional_call`` inside the trace, so new weights of the same module
reuse the compiled computation (:meth:`TorchAdapter.new_state`).

A layer is named by its dotted module name (``"layer3"``, ``"layer4.1.conv2"``, as
``model.named_modules()`` lists them) or given as the module object itself. A forward hook,
registered for the duration of one trace, takes the layer's output (a torchax tensor), records
its JAX value and returns the edited value in its place. The module runs in eval mode (BatchNorm's
running statistics, dropout off); its own training flags are restored afterwards.

Layout: PyTorch is channels-first, so the adapter's ``default_layout`` is ``"NCHW"``: the
explainer takes ``(B, C, H, W)`` images and reads rank-4 layer outputs as ``(B, C, h, w)``
(:class:`jaxcam._layout.MapAdapter` does the transposes and any ``reshape_transform``; this
adapter hands the model its images and the layers' raw outputs as they are).

torchax 0.0.13 does not import with torch 2.14 as it stands; :mod:`._torchax_compat` imports it.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from typing import Any

import jax

from jaxcam.adapters._tap import Edit, LayerPath, Recorder, unknown_layer_error
from jaxcam.adapters._torchax_compat import import_torchax

__all__ = ["TorchAdapter", "is_torch_module", "new_torch_weights", "run_module", "torch_head_hooks",
           "torch_layer_name", "torch_module_names", "torch_weights"]

def is_torch_module(model: Any) -> bool:
    """Whether ``model`` is a ``torch.nn.Module`` (without importing torch when it is absent)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(model, torch.nn.Module)


def torch_layer_name(model: Any, layer: Any) -> str:
    """The dotted name of submodule ``layer`` of ``model``, found by identity.

    Args:
      model: the ``torch.nn.Module``.
      layer: one of its submodules.

    Returns:
      Its name as ``model.named_modules()`` gives it (e.g. ``"layer3"``).

    Raises:
      ValueError: ``layer`` is not a submodule of ``model``.
    """
    for name, module in model.named_modules():
        if module is layer and name:
            return name
    raise ValueError(f"the {type(layer).__name__} given as a target layer is not a submodule of "
                     f"this {type(model).__name__}; pass one of its modules (e.g. model.layer3) "
                     "or a dotted name")


def torch_module_names(model: Any) -> list[str]:
    """Every submodule's dotted name (``model.named_modules()``'s, the root left out)."""
    return [name for name, _ in model.named_modules() if name]


def _dotted(layer: LayerPath) -> str:
    """``("layer3", "1")`` or ``("layer3.1",)`` -> ``"layer3.1"``."""
    return ".".join(layer)


def torch_weights(module: Any) -> dict[str, jax.Array]:
    """A module's parameters and buffers as JAX arrays (copies), by their ``state_dict`` names."""
    env = import_torchax().default_env()
    tensors = {name: t.detach() for name, t in module.state_dict(keep_vars=True).items()}
    return env.t2j_copy(tensors)


@dataclasses.dataclass(frozen=True)
class TorchAdapter:
    """A ``torch.nn.Module`` run through torchax and tapped at some layers; its state is the
    parameters and buffers as a dict of ``jax.Array``.

    Equal (and so sharing ``jax.jit``'s compilation) for the same module object and layers.

    Attributes:
      module: the ``torch.nn.Module``.
      layers: the tapped layers, each a 1-tuple of its dotted name.
      default_layout: PyTorch's ``"NCHW"`` (images and rank-4 layer outputs channels-first).
    """

    module: Any
    layers: tuple[LayerPath, ...]
    kind = "torch"
    default_layout = "NCHW"

    @classmethod
    def prepare(cls, module: Any, layers: Sequence[LayerPath]
                ) -> tuple[TorchAdapter, dict[str, jax.Array]]:
        """Check the layers and copy the weights, once.

        Args:
          module: the ``torch.nn.Module``.
          layers: the layers' dotted names (a path's parts are joined with dots).

        Returns:
          The adapter and its state (the weights as JAX arrays).

        Raises:
          ValueError: a layer that does not exist (the message lists those that do).
        """
        import_torchax()
        names = [(n,) for n, _ in module.named_modules() if n]
        dotted = []
        for layer in layers:
            name = (_dotted(layer),)
            if name not in names:
                raise unknown_layer_error(name, names)
            dotted.append(name)
        return cls(module, tuple(dotted)), torch_weights(module)

    def forward(self, state: Any, images: jax.Array, edits: Sequence[Edit] | None = None
                ) -> tuple[Any, list[jax.Array]]:
        """The model's output and the tapped layers' outputs.

        Args:
          state: the weights (name -> ``jax.Array``).
          images: the model's input, as it takes it ((B, C, H, W) for a usual PyTorch model).
          edits: ``edits[i]`` replaces layer i's output on its way up.

        Returns:
          The model output (JAX arrays) and the tapped layers' outputs as they are (before
          ``edits``).
        """
        torchax = import_torchax()
        env = torchax.default_env()
        recorder = Recorder(self.layers, edits or [lambda a: a] * len(self.layers))

        def hook_for(layer: LayerPath) -> Any:
            def hook(module: Any, inputs: Any, output: Any) -> Any:
                if not isinstance(output, torchax.tensor.Tensor):
                    raise TypeError(f"layer {_dotted(layer)!r} returns "
                                    f"{type(output).__name__}, not a tensor; choose a layer whose "
                                    "output is a single feature map")
                return env.j2t_iso(recorder.record(layer, output.jax()))
            return hook

        hooks = [(_dotted(layer), "forward", hook_for(layer)) for layer in self.layers]
        return run_module(self.module, state, images, hooks), recorder.collected()

    def check_call(self, state: Any, images: jax.Array) -> None:
        """Nothing to check per call: the layers were checked when prepared."""

    def new_state(self, model: Any = None, variables: Any = None) -> Any:
        """New weights: ``model`` (a module of the same structure, e.g. the model trained
        further) or ``variables`` (its ``state_dict``).

        Raises:
          TypeError: neither, or both.
          ValueError: weights of other names or shapes.
        """
        return new_torch_weights(self.module, model, variables)


def run_module(module: Any, state: dict[str, jax.Array], images: jax.Array,
               hooks: Sequence[tuple[str, str, Any]]) -> Any:
    """``module``'s output on ``images`` with the weights ``state``, run as JAX, in eval mode.

    Args:
      module: the ``torch.nn.Module``.
      state: its parameters and buffers (name -> ``jax.Array``).
      images: its input.
      hooks: ``(submodule name, "forward" or "forward_pre", hook)``, registered on the
        submodules for the duration of this call (torch's hook signatures).

    Returns:
      The module's output, its tensors as JAX arrays.
    """
    import torch

    env = import_torchax().default_env()
    training = {m: m.training for m in module.modules()}
    handles = []
    try:
        for name, kind, hook in hooks:
            sub = module.get_submodule(name) if name else module
            register = (sub.register_forward_pre_hook if kind == "forward_pre"
                        else sub.register_forward_hook)
            handles.append(register(hook))
        module.eval()
        tensors, x = env.j2t_iso((dict(state), images))
        with env, torch.no_grad():
            output = torch.func.functional_call(module, tensors, (x,))
        return env.t2j_iso(output)
    finally:
        for handle in handles:
            handle.remove()
        for m, flag in training.items():
            m.training = flag


def torch_head_hooks(heads: Sequence[tuple[str, str]], recorder: Any
                     ) -> list[tuple[str, str, Any]]:
    """The hooks (for :func:`run_module`) of multi-exit heads.

    Args:
      heads: each exit's ``(entry, exit)`` dotted module names: the entry module's input is the
        exit's features, the exit module's output its logits (the same module for a one-module
        head, e.g. ``classifiers.0``).
      recorder: ``recorder.enter(i, x)`` takes exit i's features and returns what the entry
        module is fed instead; ``recorder.leave(i, y)`` takes its logits
        (:class:`jaxcam.adapters.exits.HeadRecorder`).

    Returns:
      ``(name, kind, hook)`` triples: a forward pre-hook replaces only the head's own input, so
      the rest of the network (a next stage fed the same features) sees them unchanged.
    """
    torchax = import_torchax()
    env = torchax.default_env()
    hooks: list[tuple[str, str, Any]] = []
    for i, (entry, last) in enumerate(heads):
        def enter(module: Any, args: Any, i: int = i, entry: str = entry) -> Any:
            if len(args) != 1 or not isinstance(args[0], torchax.tensor.Tensor):
                raise TypeError(f"head module {entry!r} is called with {len(args)} positional "
                                "inputs; name a head module that takes the exit's feature map "
                                "as its one input")
            return (env.j2t_iso(recorder.enter(i, args[0].jax())),)

        def leave(module: Any, args: Any, output: Any, i: int = i, last: str = last) -> None:
            if not isinstance(output, torchax.tensor.Tensor):
                raise TypeError(f"head module {last!r} returns {type(output).__name__}, not a "
                                "tensor of logits")
            recorder.leave(i, output.jax())

        hooks += [(entry, "forward_pre", enter), (last, "forward", leave)]
    return hooks


def new_torch_weights(module: Any, model: Any = None, variables: Any = None
                      ) -> dict[str, jax.Array]:
    """New weights for an adapter of ``module``: ``model`` (a module of the same structure, e.g.
    the model trained further) or ``variables`` (its ``state_dict``), checked against
    ``module``'s names and shapes.

    Raises:
      TypeError: neither, or both.
      ValueError: weights of other names or shapes.
    """
    if (model is None) == (variables is None):
        raise TypeError("a PyTorch explainer's update takes the model (a torch.nn.Module "
                        "of the same structure) or variables=its state_dict, one of them")
    if model is not None:
        if not is_torch_module(model):
            raise TypeError(f"update takes a torch.nn.Module, got {type(model).__name__}")
        new = torch_weights(model)
    else:
        env = import_torchax().default_env()
        new = {k: v if isinstance(v, jax.Array) else env.t2j_copy(v.detach())
               for k, v in dict(variables).items()}
    expected = {k: tuple(t.shape) for k, t in module.state_dict(keep_vars=True).items()}
    got = {k: tuple(v.shape) for k, v in new.items()}
    if got != expected:
        raise ValueError("the new weights do not fit this explainer: their names or shapes "
                         "differ from the module's it was built for; build a new explainer "
                         "for the new model")
    return new
