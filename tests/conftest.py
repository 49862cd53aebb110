"""Give JAX 8 CPU devices so sharding is exercised on every run (set before JAX initialises)."""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Keras 3 reads its backend once, at its first import (tests/test_frameworks_torch_keras.py).
os.environ.setdefault("KERAS_BACKEND", "jax")

import _msd_twins  # noqa: E402
import _seeds  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


@pytest.fixture
def rng() -> np.random.Generator:
    """Fresh random inputs each test (never zeros); the seed is printed on failure.

    ``JAXCAM_TEST_SEED=N`` replays a printed seed to reproduce a failure; the module fixtures'
    weight seeds drawn so far (``_seeds.fresh_seed``) are printed too."""
    replay = os.environ.get("JAXCAM_TEST_SEED")
    seed = int(replay) if replay else int.from_bytes(os.urandom(4), "little")
    print(f"random seed: {seed}")
    if _seeds.DRAWN:
        print("weight seeds: " + ", ".join(f"{k}={v}" for k, v in _seeds.DRAWN.items()))
    return np.random.default_rng(seed)


@pytest.fixture(scope="module")
def twins():
    """The small MSD-Net twin of ``_msd_twins`` (PyTorch, Flax NNX), one per test module."""
    return _msd_twins.small_twins()


@pytest.fixture(scope="module")
def twins64(twins):
    """Float64 copies of ``twins`` (use the Flax one under ``jax.enable_x64``)."""
    return _msd_twins.as_float64(*twins)
