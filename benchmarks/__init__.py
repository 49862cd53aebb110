"""Benchmarks: jaxcam vs the PyTorch CAM libraries (``python -m benchmarks``) and micro-benchmarks.

Importing the package sets ``OMP_WAIT_POLICY=PASSIVE`` unless set (see
:func:`benchmarks._env.prepare_process`): it must happen before torch is imported.
"""

from benchmarks._env import prepare_process

prepare_process()
