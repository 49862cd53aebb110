"""Explaining a data set: every local device, several hosts, resumable, nothing lost.

:func:`explain_dataset` streams the inputs listed by :func:`list_inputs` (files, directories,
globs, file lists, and any :class:`InputSource` a caller adds, such as a data set archive)
through decoding threads, a jitted SPMD explain step over all local devices
(:class:`ExplainStep`) and a writer thread into shard files, atomically, then writes
``manifest.json`` and ``errors.jsonl``. Re-running the same call after a crash finishes what
is missing. :func:`open_results` reads the results back by file name.

The engine knows neither a model family nor the command line: the caller says how images
become model inputs (:class:`Preprocessing`) and may add columns and links to the gallery
(:class:`GalleryExtras`). ``jaxcam explain`` and ``jaxcam demo`` are command lines over it.

Modules: ``_sources`` (inputs), ``_names`` (files and output names), ``_decode`` (safe
decoding, resizing), ``_preprocessing``, ``_engine`` (device step), ``_pipeline`` (threads),
``_shards`` (shard files), ``_plan`` (a run's settings), ``_run`` (a run), ``_finish``
(manifest, errors, cams.npz, gallery), ``_extras``, ``_reader``, ``_distributed``,
``_pictures``, ``_progress``.
"""

from jaxcam.batch._decode import (
    DEFAULT_MAX_PIXELS,
    InputError,
    PixelBudget,
    center_crop,
    declared_size,
    decode_checked,
    decode_image,
    read_image_checked,
    to_model_input,
)
from jaxcam.batch._distributed import PeerLostError, init_distributed
from jaxcam.batch._engine import ExplainStep
from jaxcam.batch._extras import GalleryExtras
from jaxcam.batch._names import MAX_NAME, expand_inputs, shown, unique_names
from jaxcam.batch._pipeline import Timings
from jaxcam.batch._plan import SMALL_RUN, BatchJob, RunMismatchError, model_digest
from jaxcam.batch._preprocessing import Preprocessing
from jaxcam.batch._reader import Result, Results, open_results
from jaxcam.batch._run import RunSummary, explain_dataset
from jaxcam.batch._shards import OutputError, owned_shards, shard_ranges
from jaxcam.batch._sources import (
    FileSource,
    Inputs,
    InputSource,
    SourceFactory,
    class_index,
    list_inputs,
)

__all__ = [
    "explain_dataset",
    "BatchJob",
    "Preprocessing",
    "GalleryExtras",
    "RunSummary",
    "RunMismatchError",
    "Timings",
    "SMALL_RUN",
    "list_inputs",
    "Inputs",
    "InputSource",
    "SourceFactory",
    "FileSource",
    "class_index",
    "expand_inputs",
    "unique_names",
    "ExplainStep",
    "open_results",
    "Results",
    "Result",
    "init_distributed",
    "InputError",
    "OutputError",
    "PeerLostError",
    "PixelBudget",
    "shown",
    "MAX_NAME",
    "DEFAULT_MAX_PIXELS",
    "declared_size",
    "decode_checked",
    "decode_image",
    "read_image_checked",
    "to_model_input",
    "center_crop",
    "shard_ranges",
    "owned_shards",
    "model_digest",
]
