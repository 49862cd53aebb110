"""Several processes (hosts): ``jax.distributed`` set-up and the end-of-run collectives.

Explaining needs no communication between processes: each runs SPMD over its own local
devices on its own shards. At the end a real collective (``process_allgather`` over every
process's devices; Gloo on CPU) gathers every process's counts, which also serves as the barrier
after which process 0 may read all shards and write the manifest.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import jax
import numpy as np

__all__ = ["init_distributed", "cluster_detected", "gather_counts", "PeerLostError", "Peers",
           "PEER_TIMEOUT_S"]

#: A process whose heartbeat file is older than this is taken for dead: the others stop with
#: :class:`PeerLostError` instead of waiting for JAX's own heartbeat (100 s, then an abort).
PEER_TIMEOUT_S = 10.0
_BEAT_S = 1.0
_PEERS_DIR = ".jaxcam-peers"


class PeerLostError(RuntimeError):
    """Another process of a multi-process run stopped (killed, crashed, or failed) before the
    run's end; complete shards are kept and the same command on every host finishes the run."""


class Peers:
    """Liveness of a run's processes through the shared output folder.

    Each process touches ``OUT/.jaxcam-peers/<attempt>-<p>.alive`` every second from a thread;
    before each collective, :meth:`wait` marks this process as arrived and waits until every
    process has, raising :class:`PeerLostError` as soon as one has shown no sign of life for
    :data:`PEER_TIMEOUT_S` seconds. JAX's collectives have no such timeout: without this, the
    survivors of a killed process wait for its heartbeat timeout and then abort.

    Args:
      out: the run's (shared) output folder.
      attempt: a number all processes of this attempt share (files of earlier, killed
        attempts are ignored).
      process: this process's index; processes: how many.
      timeout: seconds without a heartbeat after which a process is taken for dead.
    """

    def __init__(self, out: Path, attempt: int, process: int, processes: int,
                 timeout: float = PEER_TIMEOUT_S):
        self.dir = Path(out) / _PEERS_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        self.attempt, self.process, self.processes = attempt, process, processes
        self.timeout = timeout
        self._stop = threading.Event()
        self._alive(process).touch()
        self._thread = threading.Thread(target=self._beat, name="jaxcam-heartbeat", daemon=True)
        self._thread.start()

    def _alive(self, p: int) -> Path:
        return self.dir / f"{self.attempt}-{p}.alive"

    def _beat(self) -> None:
        while not self._stop.wait(_BEAT_S):
            try:
                os.utime(self._alive(self.process))
            except OSError:
                self._alive(self.process).touch()

    def wait(self, tag: str) -> None:
        """Arrive at barrier ``tag`` and return once every process has.

        Raises:
          PeerLostError: a process stopped before arriving.
        """
        (self.dir / f"{self.attempt}-{self.process}.{tag}").touch()
        start = time.time()
        while True:
            missing = [p for p in range(self.processes)
                       if not (self.dir / f"{self.attempt}-{p}.{tag}").exists()]
            if not missing:
                return
            now = time.time()
            for p in missing:
                try:
                    last = self._alive(p).stat().st_mtime
                except FileNotFoundError:  # not started yet: give it the timeout from now
                    last = start
                if now - last > self.timeout:
                    raise PeerLostError(
                        f"process {p} of {self.processes} stopped (no sign of life for "
                        f"{self.timeout:.0f} s): it was killed or failed; complete shards are "
                        f"kept: run the same command again on every host to finish")
            time.sleep(0.2)

    def close(self, remove: bool = False) -> None:
        """Stop the heartbeat; with ``remove`` (process 0 once every process has finished)
        delete the files of earlier attempts (this attempt's few stay until the next run)."""
        self._stop.set()
        if remove:
            for path in self.dir.glob("*"):
                if not path.name.startswith(f"{self.attempt}-"):
                    path.unlink(missing_ok=True)

# Environment variables of launchers under which jax.distributed.initialize() finds its
# coordinator by itself (see jax._src.clusters): when several tasks are present.
_CLUSTER_SIZE_VARS = ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE")


def cluster_detected() -> bool:
    """Whether this process looks like one task of several of a cluster launcher (SLURM,
    Open MPI, MPICH) or has ``JAX_COORDINATOR_ADDRESS`` set."""
    if os.environ.get("JAX_COORDINATOR_ADDRESS"):
        return True
    for var in _CLUSTER_SIZE_VARS:
        try:
            if int(os.environ.get(var, "1")) > 1:
                return True
        except ValueError:
            continue
    return False


def init_distributed(coordinator: str | None = None, num_processes: int | None = None,
                     process_id: int | None = None) -> bool:
    """Join a multi-process JAX run, before anything else uses JAX.

    With ``coordinator`` (``host:port`` of process 0) the other two arguments are needed unless
    the launcher provides them; with none, JAX's cluster auto-detection is used if
    :func:`cluster_detected`, else nothing happens (a single process). On CPU the Gloo
    collectives are selected (the default CPU backend has none across processes).

    Args:
      coordinator: ``host:port`` of process 0's coordination service.
      num_processes: how many processes take part.
      process_id: this process's index, 0..num_processes-1.

    Returns:
      True if ``jax.distributed`` was initialised.

    Raises:
      ValueError: inconsistent arguments (e.g. a process id out of range).
    """
    given = (coordinator, num_processes, process_id)
    if all(v is None for v in given) and not cluster_detected():
        return False
    if num_processes is not None and num_processes < 1:
        raise ValueError(f"--num-processes must be at least 1, got {num_processes}")
    if process_id is not None and num_processes is not None \
            and not 0 <= process_id < num_processes:
        raise ValueError(f"--process-id {process_id} is out of range 0..{num_processes - 1} "
                         f"for --num-processes {num_processes}")
    if (num_processes is not None or process_id is not None) and coordinator is None \
            and not cluster_detected():
        raise ValueError("--num-processes/--process-id need --coordinator HOST:PORT (the "
                         "address of process 0), unless a cluster launcher provides it")
    # Must precede initialize: the CPU client is created with its collectives then.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id)
    return True


def gather_counts(values: np.ndarray) -> np.ndarray:
    """Every process's ``values`` (1-D int32), stacked as (processes, n), in every process.

    A single process returns ``values[None]`` without communicating.
    """
    values = np.asarray(values, np.int32)
    if jax.process_count() == 1:
        return values[None]
    from jax.experimental import multihost_utils

    gathered = multihost_utils.process_allgather(values)
    multihost_utils.sync_global_devices("jaxcam.batch: all shards written")
    return np.asarray(gathered).reshape(jax.process_count(), -1)
