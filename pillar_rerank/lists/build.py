"""The resumable cache builder: search, build and write every list of a retrieval set.

The build happens in ``<path>.partial``: neighbour lists first, then one shard file at a time,
each written atomically (temporary file + rename) and recorded in ``progress.json``; an
interrupted build resumes from its finished files, and the finished directory is renamed onto
its target. The result is read by :class:`~pillar_rerank.lists.cached.CachedLists`.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from pillar_rerank._version import __version__
from pillar_rerank.config import LeaPRRConfig
from pillar_rerank.exceptions import CheckpointError, InputFileError, InvalidInputError
from pillar_rerank.inputs import RetrievalSet
from pillar_rerank.io import load_json, save_json, sha256_file
from pillar_rerank.lists.builder import ListBuilder
from pillar_rerank.lists.cached import MANIFEST, NEIGHBORS_FILE, CachedLists, NeighborPieces, save_neighbors
from pillar_rerank.lists.contract import LIST_FIELDS, QueryLists
from pillar_rerank.lists.fingerprint import cache_meta, meta_diff
from pillar_rerank.lists.tensorfile import FORMAT, FORMAT_VERSION, save_lists
from pillar_rerank.neighbors import neighbor_memory_plan
from pillar_rerank.typing import PathLikeStr
from pillar_rerank.utils.progress import progress as progress_bar

logger = logging.getLogger(__name__)

PROGRESS = "progress.json"


def _file_record(path: Path, **extra: Any) -> dict[str, Any]:
    return {"bytes": path.stat().st_size, "sha256": sha256_file(path), **extra}

def _fill_shard(fn, start: int, stop: int, batch: int) -> QueryLists:
    """Lists of queries [start, stop) built in batches into preallocated tensors (no concat copy)."""
    out: dict[str, torch.Tensor] = {}
    for s in range(start, stop, batch):
        part = fn(torch.arange(s, min(stop, s + batch)))
        for name in LIST_FIELDS:
            value = getattr(part, name)
            if name not in out:
                out[name] = torch.empty((stop - start, *value.shape[1:]), dtype=value.dtype)
            out[name][s - start:s - start + value.shape[0]] = value
        del part
    return QueryLists(**out)


def build_cache(data: RetrievalSet, config: LeaPRRConfig, path: PathLikeStr, *,
                max_memory: str | int = "4GB", device: str | torch.device | None = None,
                index: str | None = None, index_params: dict | None = None, power_iterations: int = 1,
                fingerprint: str = "sampled", overwrite: bool = False, shard_queries: int | None = None,
                show_progress: bool = False, _crash_after: int | None = None) -> CachedLists:
    """Search, build and write every image- and text-query list of ``data`` under ``max_memory``.

    Parameters
    ----------
    data : RetrievalSet
    config : LeaPRRConfig
    path : path
        Cache directory to create. If it already holds a complete cache with the same
        :func:`cache_meta`, it is reused as is; a different one is an error unless ``overwrite``.
    max_memory : str or int, default="4GB"
        Bound on what building allocates on top of ``data`` (search blocks, list batches and
        the shard being filled; see ``pillar_rerank.utils.memory.plan_input_memory``). Lists are
        written shard by shard, so sets whose lists exceed memory are fine.
    device : str or None, default=None
        Device of the neighbour searches (GPU when available).
    index, index_params
        Neighbour index ("flat" exact, "ivf", "hnsw"); default from the config when it has
        ``neighbor_index``, else "flat".
    power_iterations : int, default=1
        Of the second-order estimate.
    fingerprint : {"sampled", "full"}, default="sampled"
        How the data fingerprint in the meta is computed (:func:`data_fingerprint`).
    overwrite : bool, default=False
        Replace an existing cache built for other inputs or settings.
    shard_queries : int, optional
        Queries per shard file (default: as many as half the working budget holds).
    show_progress : bool, default=False
        A bar per list kind on stderr while shards are written (on a terminal only).

    Returns
    -------
    CachedLists

    Notes
    -----
    The build happens in ``<path>.partial``: neighbour lists first, then one shard file at a time,
    each written atomically and recorded in ``progress.json``. A build interrupted for any reason
    resumes from the finished files (checked by SHA-256) when called again with the same inputs
    and settings, skipping the neighbour search when it was done. The finished directory is
    renamed onto ``path``.
    """
    config = config.validate()
    target = Path(path)
    meta = cache_meta(data, config, index=index, index_params=index_params,
                      power_iterations=power_iterations, fingerprint=fingerprint)
    if (target / MANIFEST).exists():
        try:
            cached = CachedLists(target, data=data, expected_meta=meta)
        except CheckpointError:
            if not overwrite:
                raise
        else:
            logger.info("cache %s: up to date, reused.", target)
            return cached
    elif target.exists() and any(target.iterdir()) and not overwrite:
        raise InputFileError(f"cache ({target}): exists and is not a pillar-rerank cache; "
                             "choose another path or pass overwrite=True.")
    if not target.parent.exists():
        raise InputFileError(f"cache ({target}): folder {target.parent} does not exist.")
    partial = target.with_name(target.name + ".partial")
    done = _resume(partial, meta)
    source = meta["config"]["intra_source"]
    L, C = config.n_pillars, config.graph_neighbors
    depth = {"i2t": max(L, config.list_len_i2t - 1, C), "t2i": max(L, config.list_len_t2i - 1, C),
             "i2i": max(L, C), "t2t": max(L, C)}
    plan = neighbor_memory_plan(
        data, depth, max_memory, intra_source=source, second_order_rank=config.intra_rank,
        index=meta["index"], index_params=meta["index_params"],
        list_shape={"n_pillars": L, "list_len_i2t": config.list_len_i2t,
                    "list_len_t2i": config.list_len_t2i, "graph_neighbors": C})
    written = 0

    def record(name: str, **extra: Any) -> None:
        nonlocal written
        done[name] = _file_record(partial / name, **extra)
        save_json(partial / PROGRESS, {"format": FORMAT, "meta": meta, "files": done}, overwrite=True)
        written += 1
        if _crash_after is not None and written >= _crash_after:
            raise RuntimeError(f"build_cache: simulated crash after {written} files (_crash_after).")

    t_start = time.perf_counter()
    if NEIGHBORS_FILE in done:
        nb = NeighborPieces(partial / NEIGHBORS_FILE)
        builder = ListBuilder.from_neighbors(data, config, nb.neighbors, intra=nb.intra,
                                             list_batch=plan.list_batch)
        logger.info("cache %s: resuming with the neighbour lists already searched.", target)
    else:
        builder = ListBuilder.from_data(data, config, device=device, max_memory=max_memory,
                                        index=meta["index"], index_params=meta["index_params"],
                                        power_iterations=power_iterations)
        save_neighbors(partial / NEIGHBORS_FILE, builder, data.txt_to_img, meta)
        record(NEIGHBORS_FILE)
    t_lists = time.perf_counter()
    logger.info("cache %s: neighbours ready in %.1f s.", target, t_lists - t_start)
    layout = {NEIGHBORS_FILE}
    for kind, fn, n in (("image", builder.image_lists, data.n_images),
                        ("text", builder.text_lists, data.n_texts)):
        step = shard_queries or plan.shard_queries[kind]
        starts = progress_bar(enumerate(range(0, n, step)), desc=f"caching {kind} lists", unit="shard",
                          total=-(-n // step), disable=not show_progress)
        for number, start in starts:
            stop = min(n, start + step)
            name = f"{kind}-{number:05d}.safetensors"
            layout.add(name)
            if name in done and (done[name].get("start"), done[name].get("stop")) == (start, stop):
                continue
            lists = _fill_shard(fn, start, stop, plan.list_batch[kind])
            save_lists(partial / name, {kind: lists}, {"kind": kind, "start": start, "stop": stop})
            del lists
            record(name, kind=kind, start=start, stop=stop)
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "package_version": __version__,
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "complete": True, "meta": meta, "memory_plan": plan.to_dict(),
                "build_seconds": {"neighbors": round(t_lists - t_start, 3),
                                  "lists": round(time.perf_counter() - t_lists, 3)},
                "files": {k: v for k, v in done.items() if k in layout}}
    for stale in set(done) - layout:  # shards of an interrupted build with another shard size
        (partial / stale).unlink(missing_ok=True)
    save_json(partial / MANIFEST, manifest, overwrite=True)
    (partial / PROGRESS).unlink()
    _swap_into_place(partial, target)
    return CachedLists(target, data=data, expected_meta=meta)

def _resume(partial: Path, meta: dict) -> dict[str, dict]:
    """Finished files of an interrupted build with the same meta; a stale partial dir is cleared."""
    if not partial.exists():
        partial.mkdir()
        return {}
    progress_file = partial / PROGRESS
    progress = None
    if progress_file.is_file():
        with contextlib.suppress(InvalidInputError, InputFileError):
            progress = load_json(progress_file, name="cache progress")
    same = (isinstance(progress, dict) and progress.get("format") == FORMAT
            and not meta_diff(progress.get("meta"), json.loads(json.dumps(meta))))
    if not same:
        ours = (PROGRESS, MANIFEST)
        if any(p.name not in ours and not p.name.endswith(".safetensors") and not p.name.startswith(".")
               for p in partial.iterdir()):
            raise InputFileError(f"cache ({partial}): a folder that is not a partial pillar-rerank cache "
                                 "is in the way; remove it.")
        shutil.rmtree(partial)
        partial.mkdir()
        return {}
    done = {}
    for name, rec in progress.get("files", {}).items():
        p = partial / name
        if p.is_file() and p.stat().st_size == rec.get("bytes") and sha256_file(p) == rec.get("sha256"):
            done[name] = rec
    logger.info("cache %s: resuming; %d finished files kept.", partial, len(done))
    return done


def _swap_into_place(partial: Path, target: Path) -> None:
    old = None
    if target.exists():
        old = target.with_name(f"{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    os.replace(partial, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


__all__ = ["build_cache"]
