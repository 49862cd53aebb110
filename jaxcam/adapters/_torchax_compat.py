"""Importing torchax 0.0.13 with torch 2.14, whose operator set it predates.

torchax builds its operator tables at import time, indexing ``torch.ops.aten.<op>.<overload>``
for every operator it lowers. torch 2.14 removed some of them (``aten.prod.dim_Dimname``,
``aten.cholesky``, ``aten.qr``, some ``c10d_functional`` collectives, ...), so a plain
``import torchax`` stops at the first with an ``AttributeError``. Those operators cannot be
produced by torch 2.14 itself, so torchax's table entries for them are never looked up.

:func:`import_torchax` therefore imports torchax -- and, eagerly, every submodule that registers
operators, so that nothing is registered later without the fix -- while
``torch._ops.OpOverloadPacket.__getattr__`` and ``torch._ops._OpNamespace.__getattr__`` answer a
missing name with an inert :class:`MissingOp` placeholder (hashable, so it can be a table key;
raising ``NotImplementedError`` if ever called). Both methods are restored before the function
returns, and the names that were missing are recorded (:data:`MISSING_OPS`). Nothing else in
torch or torchax is changed.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import threading
from typing import Any

__all__ = ["MISSING_OPS", "MissingOp", "import_torchax"]

# The qualified names ("aten.prod.dim_Dimname", "c10d_functional.all_reduce") that torchax
# referred to and this torch lacks; filled by the first import_torchax().
MISSING_OPS: list[str] = []
_LOCK = threading.Lock()
_TORCHAX: list[Any] = []  # the module, once imported through here
_SKIPPED_SUBMODULES = ("test", "tpu")  # test helpers and TPU-only kernels: not needed here


class MissingOp:
    """A stand-in for an operator (or overload) this torch does not have.

    Args:
      name: its qualified name, e.g. ``"aten.prod.dim_Dimname"``.
    """

    def __init__(self, name: str):
        self.name = name

    def __getattr__(self, key: str) -> MissingOp:
        if key.startswith("__"):
            raise AttributeError(key)
        return MissingOp(_record(f"{self.name}.{key}"))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"torch.ops.{self.name} does not exist in torch "
                                  f"{_torch_version()}; torchax's lowering of it cannot run")

    def __repr__(self) -> str:
        return f"MissingOp({self.name!r})"


def _record(name: str) -> str:
    if name not in MISSING_OPS:
        MISSING_OPS.append(name)
    return name


def _torch_version() -> str:
    import torch

    return str(torch.__version__)


def import_torchax() -> Any:
    """``import torchax`` (and its operator-registering submodules) with this torch.

    Returns:
      The ``torchax`` module.

    Raises:
      ImportError: torchax or torch is not installed (install the ``torch`` extra), or a
        submodule fails for another reason than a missing operator.
    """
    if _TORCHAX:
        return _TORCHAX[0]
    with _LOCK:
        if _TORCHAX:
            return _TORCHAX[0]
        try:
            import torch._ops as ops
        except ImportError as err:
            raise ImportError("PyTorch models need torch and torchax: pip install "
                              "'jaxcam[torch]'") from err
        packet_getattr = ops.OpOverloadPacket.__getattr__
        namespace_getattr = ops._OpNamespace.__getattr__

        def missing_overload(self: Any, key: str) -> Any:
            try:
                return packet_getattr(self, key)
            except AttributeError:
                if key.startswith("__"):
                    raise
                name = f"{self._qualified_op_name.replace('::', '.')}.{key}"
                return MissingOp(_record(name))

        def missing_op(self: Any, key: str) -> Any:
            try:
                return namespace_getattr(self, key)
            except AttributeError:
                if key.startswith("__"):
                    raise
                name = f"{self.name.removeprefix('torch.ops.')}.{key}"
                return MissingOp(_record(name))

        if importlib.util.find_spec("torchvision") is not None:
            # Registers torch.ops.torchvision.*, so torchax lowers them rather than a placeholder.
            importlib.import_module("torchvision")
        ops.OpOverloadPacket.__getattr__ = missing_overload
        ops._OpNamespace.__getattr__ = missing_op
        try:
            try:
                torchax = importlib.import_module("torchax")
            except ImportError as err:
                raise ImportError("PyTorch models run through torchax: pip install "
                                  "'jaxcam[torch]'") from err
            for info in pkgutil.walk_packages(torchax.__path__, "torchax."):
                if any(part.startswith(_SKIPPED_SUBMODULES) for part in info.name.split(".")):
                    continue
                importlib.import_module(info.name)
        finally:
            ops.OpOverloadPacket.__getattr__ = packet_getattr
            ops._OpNamespace.__getattr__ = namespace_getattr
        _TORCHAX.append(torchax)
        return torchax
