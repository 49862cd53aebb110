"""Compile once per machine: JAX's persistent compilation cache, and what compiling cost.

XLA compiles every jitted program on its first call in a process, and a Grad-CAM program of a
real network takes seconds to compile on a CPU. JAX can store compiled programs on disk and load
them in later processes (the persistent compilation cache); by default it stores only programs
that took over a second to compile. :func:`enable_compile_cache` turns it on for every program,
so a second run of the same explanation compiles nothing. :func:`compile_stats` reads JAX's own
monitoring events: how many programs were compiled or read from the cache, and how long that
took.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from pathlib import Path

import jax

__all__ = ["CompileStats", "compile_stats", "default_cache_dir", "enable_compile_cache"]

# JAX's monitoring events (jax/_src/compiler.py, jax/_src/dispatch.py).
_REQUESTS = "/jax/compilation_cache/compile_requests_use_cache"
_HITS = "/jax/compilation_cache/cache_hits"
_MISSES = "/jax/compilation_cache/cache_misses"
_BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"
_SAVED = "/jax/compilation_cache/compile_time_saved_sec"


@dataclasses.dataclass(frozen=True)
class CompileStats:
    """What XLA compilation cost this process so far (counted from the first listener).

    Attributes:
      programs: programs that reached XLA (compiled, or read from the persistent cache).
      cache_requests: of those, the ones looked up in the persistent cache.
      cache_hits: programs read from the persistent cache instead of compiled.
      cache_misses: programs compiled and then written to the cache.
      seconds: time in XLA compilation or cache reads (JAX's backend-compile event).
      saved_seconds: the compile time the cache hits saved, as the cache recorded it.
    """

    programs: int = 0
    cache_requests: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    seconds: float = 0.0
    saved_seconds: float = 0.0

    @property
    def compiled(self) -> int:
        """Programs XLA actually compiled (not read from the cache)."""
        return self.programs - self.cache_hits

    def __sub__(self, other: CompileStats) -> CompileStats:
        """The difference of two snapshots: what happened between them."""
        return CompileStats(*(getattr(self, f.name) - getattr(other, f.name)
                              for f in dataclasses.fields(self)))


_lock = threading.Lock()
_counts: dict[str, float] = {}
_listening = False


def _on_event(event: str, **_: object) -> None:
    if event in (_REQUESTS, _HITS, _MISSES):
        with _lock:
            _counts[event] = _counts.get(event, 0) + 1


def _on_duration(event: str, duration: float, **_: object) -> None:
    if event in (_BACKEND_COMPILE, _SAVED):
        with _lock:
            _counts[event] = _counts.get(event, 0.0) + duration
            if event == _BACKEND_COMPILE:
                _counts["programs"] = _counts.get("programs", 0) + 1


def _listen() -> None:
    global _listening
    with _lock:
        if _listening:
            return
        _listening = True
    jax.monitoring.register_event_listener(_on_event)
    jax.monitoring.register_event_duration_secs_listener(_on_duration)


def compile_stats() -> CompileStats:
    """A snapshot of this process's compilation counts and times.

    Counting starts with the first call of this function or of :func:`enable_compile_cache`;
    subtract two snapshots for what happened between them.

    Returns:
      The counts so far.
    """
    _listen()
    with _lock:
        c = dict(_counts)
    return CompileStats(programs=int(c.get("programs", 0)),
                        cache_requests=int(c.get(_REQUESTS, 0)),
                        cache_hits=int(c.get(_HITS, 0)), cache_misses=int(c.get(_MISSES, 0)),
                        seconds=float(c.get(_BACKEND_COMPILE, 0.0)),
                        saved_seconds=float(c.get(_SAVED, 0.0)))


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/jaxcam/xla``, or ``~/.cache/jaxcam/xla`` without that variable."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "jaxcam" / "xla"


def enable_compile_cache(path: str | os.PathLike | None = None) -> Path:
    """Store every compiled XLA program in ``path`` and reuse it in later processes.

    Sets JAX's ``jax_compilation_cache_dir`` and lowers its thresholds
    (``jax_persistent_cache_min_compile_time_secs`` = 0,
    ``jax_persistent_cache_min_entry_size_bytes`` = -1) so that small programs, which still
    take a noticeable fraction of a second each, are stored too. JAX decides whether to use the
    cache at its first compilation; if something was compiled before this call, the cache is
    reset so that the next compilation sees the new setting. Programs are keyed by their HLO,
    the devices and JAX/XLA versions, so a cache directory can be shared by different projects.

    Args:
      path: the cache directory (created if needed); default :func:`default_cache_dir`.

    Returns:
      The cache directory.
    """
    from jax.experimental.compilation_cache import compilation_cache

    directory = Path(path) if path is not None else default_cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    _listen()
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    jax.config.update("jax_enable_compilation_cache", True)
    compilation_cache.reset_cache()
    return directory
