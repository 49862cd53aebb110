"""PyTorch interoperation: the PyTorch twin of MSD-Net and checkpoint conversion both ways."""

from msdnet_flax.interop.convert import (
    load_pytorch_checkpoint,
    read_pytorch_state_dict,
    to_pytorch_state_dict,
)

__all__ = ["load_pytorch_checkpoint", "read_pytorch_state_dict", "to_pytorch_state_dict"]
