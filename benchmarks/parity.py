"""Before anything is timed: every contender's output against jaxcam's, on the same inputs.

Maps are compared by max absolute difference (tolerance 1e-4, as the parity tests); logits by
max absolute difference relative to the largest |logit|. A contender that disagrees is reported
with its difference and not timed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator, Sequence

import jax
import numpy as np
import torch

from benchmarks.contender import REF_FINAL, REF_LAST, REF_LOGITS, Contender, Inputs
from benchmarks.jax_side import JAXCAM_ALL, jaxcam_all_exits
from benchmarks.models import BenchTwins

TOLERANCE = 1e-4


@dataclasses.dataclass
class ParityResult:
    key: str
    ok: bool
    max_diff: float
    compared_as: str
    error: str | None = None
    seconds: float = float("nan")  # the checked call's time: its first call at this shape

    def summary(self) -> str:
        if self.error is not None:
            return f"error: {self.error}"
        word = "agrees" if self.ok else "disagrees"
        return f"{word}: max diff {self.max_diff:.1e}"


@contextlib.contextmanager
def highest_precision() -> Iterator[None]:
    """float32 everywhere: JAX's highest matmul/conv precision, no TF32 in PyTorch (GPU)."""
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with jax.default_matmul_precision("highest"):
            yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def references(twins: BenchTwins, inputs: Inputs) -> dict[str, np.ndarray]:
    """jaxcam's maps in each convention a contender is compared in, and its logits."""
    maps, logits = jaxcam_all_exits(twins, inputs, return_logits=True)
    final = np.asarray(maps)
    return {REF_FINAL: final, REF_LAST: final[-1], REF_LOGITS: np.asarray(logits)}


def check(contender: Contender, inputs: Inputs, refs: dict[str, np.ndarray]) -> ParityResult:
    try:
        call = contender.prepare(inputs)
        start = time.perf_counter()
        output = call()
        seconds = time.perf_counter() - start
        got = np.asarray(contender.comparable(output), np.float32)
    except Exception as e:  # a contender that breaks is reported, not fatal
        return ParityResult(contender.key, False, float("nan"), contender.compared_as,
                            f"{type(e).__name__}: {e}")
    ref = refs[contender.reference]
    if got.shape != ref.shape:
        return ParityResult(contender.key, False, float("nan"), contender.compared_as,
                            f"shape {got.shape}, expected {ref.shape}")
    diff = float(np.max(np.abs(got - ref)))
    if contender.relative_tolerance:
        diff /= max(float(np.max(np.abs(ref))), 1e-30)
    ok = bool(np.isfinite(diff) and diff < TOLERANCE)
    return ParityResult(contender.key, ok, diff, contender.compared_as, seconds=seconds)


def check_all(twins: BenchTwins, contenders: Sequence[Contender], inputs: Inputs, highest: bool
              ) -> dict[str, ParityResult]:
    """Check every contender; ``highest``: in float32 at the highest precision (GPU: no TF32).

    The reference is jaxcam's first call at this shape, so its time is recorded as
    explain_exits' first call (trace + compile + run).
    """
    context = highest_precision() if highest else contextlib.nullcontext()
    with context:
        start = time.perf_counter()
        refs = references(twins, inputs)
        reference_s = time.perf_counter() - start
        found = {c.key: check(c, inputs, refs) for c in contenders}
    if JAXCAM_ALL in found:
        found[JAXCAM_ALL].seconds = reference_s
    return found
