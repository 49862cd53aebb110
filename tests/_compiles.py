"""Counting what JAX traces and compiles, through JAX's own monitoring events (shared by tests)."""

from __future__ import annotations

import contextlib

import jax

__all__ = ["COMPILE_EVENTS", "compilations"]

COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
                  "/jax/core/compile/backend_compile_duration")


@contextlib.contextmanager
def compilations():
    """Collects the names of the functions JAX traces or compiles inside the block."""
    seen: list[str] = []

    def listener(event, duration, **kwargs):
        if event in COMPILE_EVENTS:
            seen.append(f"{event.rsplit('/', 1)[-1]}: {kwargs.get('fun_name')}")

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield seen
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
