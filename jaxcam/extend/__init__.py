"""Semi-public building blocks for other packages (as ``jax.extend`` / ``equinox.internal``).

No stability promise: names here may change between minor releases. This is the only part of
jaxcam that :mod:`msdnet_flax` imports.

- :mod:`jaxcam.extend.interpreter`: a small jaxpr interpreter that re-evaluates a function with
  some equations rewritten (used for guided backprop's ReLU rule and the conv rewrite below).
- :func:`fast_strided_conv_grads`: the same function with the input gradients of strided
  convolutions computed by a faster identity on XLA:CPU.
- :func:`fast_cpu_convs` (:mod:`jaxcam.extend.depthwise`): that, and on the CPU backend every
  depthwise convolution as shifted multiply-adds (XLA:CPU's depthwise kernel is 5-30x slower
  than PyTorch's); what the explain pipelines run the model through.
- :mod:`jaxcam.extend.torch_layout`: PyTorch <-> Flax kernel layouts and the strict state-dict
  reading, filling and writing both converters share;
  :func:`jaxcam.extend.skeleton.abstract_split`: a module's graph and shapes without drawing its
  weights, quickly.
- :mod:`jaxcam.extend.files`: the one atomic file writer; :mod:`jaxcam.extend.images`: the
  image extensions a folder walk takes and the ImageNet centre crop, shared with the model
  packages.
"""

from jaxcam.extend import interpreter
from jaxcam.extend.conv_grad import fast_strided_conv_grads
from jaxcam.extend.depthwise import fast_cpu_convs

__all__ = ["fast_cpu_convs", "fast_strided_conv_grads", "interpreter"]
