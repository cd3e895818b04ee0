"""Loaders for the Flickr30K caption proxy (``shared/data/f30k_xenc``): its dev split and the
training side that ``build_train.py`` there embeds once into a cache folder.

* ``f30k_dev`` (1,014 x 4,056) ships ready in the shared folder, laid out like ``caption_xenc``.
* ``f30k_train`` (29,000 x 116,000) lives in a cache folder (``cache=``, else the
  ``PILLAR_RERANK_F30K_CACHE`` environment variable, else ``~/.cache/f30k_xenc``): files
  ``proxy_f30k_train_{img,txt,cap2img}.npy`` and ``build.json``.

Every file goes through the same checks as any other input (:func:`pillar_rerank.io.load_array`,
:class:`~pillar_rerank.inputs.RetrievalSet`): a missing, corrupt or pickled file, NaN/inf, wrong
shapes or an inconsistent caption -> image map raise a clear error naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pillar_rerank.datasets.coco import find_data_folder, load_proxy_files
from pillar_rerank.exceptions import InputFileError, InvalidInputError, InvalidParameterError
from pillar_rerank.inputs import RetrievalSet
from pillar_rerank.io import load_json
from pillar_rerank.typing import PathLikeStr

ENV_VAR = "PILLAR_RERANK_F30K_DATA"
CACHE_ENV_VAR = "PILLAR_RERANK_F30K_CACHE"
SPLITS = ("f30k_dev", "f30k_train")
TRAIN_FILES = ("proxy_f30k_train_img.npy", "proxy_f30k_train_txt.npy", "proxy_f30k_train_cap2img.npy",
               "build.json")
#: Size of the complete training side (Flickr30K Karpathy train: 29,000 images, 4 query captions each).
FULL_TRAIN_IMAGES = 29_000


def f30k_data_root(root: PathLikeStr | None = None) -> Path:
    """The f30k_xenc folder: ``root``, ``$PILLAR_RERANK_F30K_DATA`` or ``../shared/data/f30k_xenc``."""
    return find_data_folder(root, env_var=ENV_VAR, folder="f30k_xenc")


def f30k_cache_dir(cache: PathLikeStr | None = None) -> Path:
    """The training side's cache folder: ``cache``, ``$PILLAR_RERANK_F30K_CACHE``, ``~/.cache/f30k_xenc``."""
    if cache is not None:
        return Path(cache)
    if os.environ.get(CACHE_ENV_VAR):
        return Path(os.environ[CACHE_ENV_VAR])
    return Path.home() / ".cache" / "f30k_xenc"


def f30k_build_info(cache: PathLikeStr | None = None) -> dict[str, Any]:
    """``build.json`` of the cached training side (counts, timings, recalls of its first items).

    Raises :class:`InputFileError` naming the missing files and how to build them.
    """
    base = f30k_cache_dir(cache)
    missing = [f for f in TRAIN_FILES if not (base / f).is_file()]
    if missing:
        raise InputFileError(
            f"f30k_train cache ({base}): missing {', '.join(missing)}; build it once with "
            f"`HF_HUB_OFFLINE=1 python ../shared/data/f30k_xenc/build_train.py {base}` "
            f"(15-25 min on 2 cores), or pass cache= / set {CACHE_ENV_VAR}."
        )
    info = load_json(base / "build.json", name="f30k_train build.json")
    if not isinstance(info, dict) or not isinstance(info.get("n_images"), int) or info["n_images"] < 1:
        raise InvalidInputError(
            f"f30k_train build.json ({base / 'build.json'}): expected an object with a positive integer "
            f"'n_images'; got {info!r}. Rebuild the cache."
        )
    return info


def load_f30k_proxy(split: str = "f30k_dev", root: PathLikeStr | None = None, *,
                    cache: PathLikeStr | None = None, min_images: int | None = None) -> RetrievalSet:
    """The Flickr30K caption-proxy retrieval set of ``split``.

    Parameters
    ----------
    split : {"f30k_dev", "f30k_train"}, default="f30k_dev"
        ``f30k_dev``: 1,014 gallery items x 4,056 captions, from the shared folder;
        ``f30k_train``: up to 29,000 x 116,000, from the cache folder.
    root : path, optional
        The f30k_xenc folder (see :func:`f30k_data_root`); only read for ``f30k_dev``.
    cache : path, optional
        The training side's cache folder (see :func:`f30k_cache_dir`).
    min_images : int, optional
        Refuse a cached training side with fewer items (e.g. one built with ``--limit``).

    Returns
    -------
    RetrievalSet
        float16 embeddings (scores = their product) and the cap2img map as relevance; the
        training side's ``build.json`` must agree with the files' sizes.
    """
    if split not in SPLITS:
        raise InvalidParameterError(f"split: expected one of {SPLITS}; got {split!r}.")
    if split == "f30k_dev":
        return load_proxy_files(f30k_data_root(root), split)
    info = f30k_build_info(cache)
    base = f30k_cache_dir(cache)
    data = load_proxy_files(base, split, texts="proxy_f30k_train_txt.npy")
    if (data.n_images, data.n_texts) != (info["n_images"], info.get("n_texts", data.n_texts)):
        raise InvalidInputError(
            f"f30k_train cache ({base}): build.json says {info['n_images']} x {info.get('n_texts')} but "
            f"the files hold {data.n_images} x {data.n_texts} (an interrupted or mixed build); rebuild it."
        )
    if min_images is not None and data.n_images < min_images:
        raise InvalidInputError(
            f"f30k_train cache ({base}): holds {data.n_images} items (a --limit build?); this needs at "
            f"least {min_images}. Build the full training side (without --limit)."
        )
    return data
