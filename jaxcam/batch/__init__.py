"""Explaining a data set: every local device, several hosts, resumable, nothing lost.

:func:`explain_dataset` streams the inputs listed by :func:`list_inputs` (files, directories,
globs, file lists, CIFAR archives, ImageNet-style folders) through decoding threads, a jitted
SPMD explain step over all local devices (:class:`ExplainStep`) and a writer thread into shard
files, atomically, then writes ``manifest.json`` and ``errors.jsonl``. Re-running the same
call after a crash finishes what is missing. :func:`open_results` reads the results back by
file name. ``jaxcam explain`` is the command line over it.

Modules: ``_sources`` (inputs), ``_decode`` (safe decoding), ``_engine`` (device step),
``_pipeline`` (threads), ``_shards`` (shard files), ``_run`` (a run), ``_finish`` (manifest,
errors, cams.npz, gallery), ``_reader``, ``_distributed``, ``_pictures``, ``_progress``.
"""

from jaxcam.batch._decode import (
    DEFAULT_MAX_PIXELS,
    InputError,
    center_crop,
    declared_size,
    decode_checked,
    read_image_checked,
)
from jaxcam.batch._distributed import init_distributed
from jaxcam.batch._engine import ExplainStep
from jaxcam.batch._pipeline import Timings
from jaxcam.batch._reader import Result, Results, open_results
from jaxcam.batch._run import (
    SMALL_RUN,
    BatchJob,
    RunMismatchError,
    RunSummary,
    explain_dataset,
    model_digest,
)
from jaxcam.batch._shards import owned_shards, shard_ranges
from jaxcam.batch._sources import Inputs, class_index, list_inputs

__all__ = [
    "explain_dataset",
    "BatchJob",
    "RunSummary",
    "RunMismatchError",
    "Timings",
    "SMALL_RUN",
    "list_inputs",
    "Inputs",
    "class_index",
    "ExplainStep",
    "open_results",
    "Results",
    "Result",
    "init_distributed",
    "InputError",
    "DEFAULT_MAX_PIXELS",
    "declared_size",
    "decode_checked",
    "read_image_checked",
    "center_crop",
    "shard_ranges",
    "owned_shards",
    "model_digest",
]
