"""Click options shared by several subcommands (data inputs, outputs)."""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import click

from pillar_rerank.exceptions import InvalidInputError
from pillar_rerank.inputs import RetrievalSet, load_retrieval_set

# The loaders check inputs (pillar_rerank.io.check_input_file), so a missing, unreadable or
# non-regular file (directory, FIFO, device) is an I/O failure (exit 3) named the same way
# everywhere; click's own checks would exit 2 for some of them.
EXISTING_FILE = click.Path(readable=False)


def data_options(prefix: str = "", *, help_side: str = "") -> Callable:
    """Add --{prefix}sims / --{prefix}image-emb / --{prefix}text-emb / --{prefix}image-sims /
    --{prefix}text-sims / --{prefix}txt2img / --{prefix}captions-per-image options; the command
    receives them as keyword arguments (read back with :func:`load_side`)."""
    p = f"{prefix}-" if prefix else ""
    side = f" ({help_side})" if help_side else ""

    def decorator(func: Callable) -> Callable:
        opts = [
            click.option(f"--{p}sims", type=EXISTING_FILE, default=None,
                         help=f"Image x text similarity matrix .npy{side}."),
            click.option(f"--{p}image-emb", type=EXISTING_FILE, default=None,
                         help=f"Image embeddings .npy, shape (n_images, d){side}."),
            click.option(f"--{p}text-emb", type=EXISTING_FILE, default=None,
                         help=f"Text embeddings .npy, shape (n_texts, d){side}."),
            click.option(f"--{p}image-sims", type=EXISTING_FILE, default=None,
                         help=f"Image x image similarity matrix .npy, shape (n_images, n_images){side}; "
                         f"with --{p}text-sims, the given intra-modal similarities (intra_source "
                         "'given'; 'auto' uses them when both are given)."),
            click.option(f"--{p}text-sims", type=EXISTING_FILE, default=None,
                         help=f"Text x text similarity matrix .npy, shape (n_texts, n_texts){side}; "
                         f"see --{p}image-sims."),
            click.option(f"--{p}txt2img", type=EXISTING_FILE, default=None,
                         help=f"Caption -> image int map .npy, shape (n_texts,){side}."),
            click.option(f"--{p}captions-per-image", type=click.IntRange(min=1), default=None,
                         help=f"Contiguous blocks of N captions per image (instead of --{p}txt2img){side}."),
        ]
        for opt in reversed(opts):
            func = opt(func)
        return func

    return decorator


def parse_value(text: str) -> Any:
    """One ``KEY=VALUE`` value: JSON when it parses (``3``, ``0.5``, ``1e-3``, ``true``, ``null``,
    ``[1, 2]``, ``{"i2t": 5}``), else ``true``/``false``/``none``/``null`` in any case, else the
    string itself. The one parser of every ``--*-param``, ``--param`` and ``--grid`` value."""
    raw = text.strip()
    try:
        return json.loads(raw)
    except ValueError:
        pass
    low = raw.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    return raw


def parse_params(pairs: tuple[str, ...] | None, *, option: str) -> dict[str, Any]:
    """``KEY=VALUE`` pairs into a dict (values by :func:`parse_value`); a malformed pair is a usage
    error naming ``option``."""
    out: dict[str, Any] = {}
    for pair in pairs or ():
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected KEY=VALUE; got {pair!r}.", param_hint=option)
        out[key.strip()] = parse_value(raw)
    return out


def key_values(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, Any]:
    """Click callback of a repeatable ``KEY=VALUE`` option (see :func:`parse_params`)."""
    return parse_params(values, option=param.get_error_hint(ctx))


def load_side(kwargs: dict, prefix: str = "", *, name: str = "data", required: bool = True
              ) -> RetrievalSet | None:
    """Pop the data options of ``prefix`` from ``kwargs`` and load the retrieval set."""
    p = f"{prefix}_" if prefix else ""
    sims = kwargs.pop(f"{p}sims", None)
    img = kwargs.pop(f"{p}image_emb", None)
    txt = kwargs.pop(f"{p}text_emb", None)
    ii = kwargs.pop(f"{p}image_sims", None)
    tt = kwargs.pop(f"{p}text_sims", None)
    t2i = kwargs.pop(f"{p}txt2img", None)
    cpi = kwargs.pop(f"{p}captions_per_image", None)
    if not required and sims is None and img is None and txt is None:
        if ii is not None or tt is not None:
            flag = f"--{prefix}-" if prefix else "--"
            raise InvalidInputError(
                f"{flag}image-sims/{flag}text-sims: give them with the {name} side's cross-modal input "
                f"({flag}sims or {flag}image-emb and {flag}text-emb)."
            )
        return None
    return load_retrieval_set(sims=sims, image_embeddings=img, text_embeddings=txt,
                              image_image=ii, text_text=tt,
                              txt_to_img=t2i, captions_per_image=cpi, name=name)


def load_scores_file(sims: str, *, txt2img: str | None, captions_per_image: int | None, name: str
                     ) -> RetrievalSet:
    """A score file with its ground truth: an image x text ``.npy``, or the ``.npz`` of
    ``rerank baseline`` (``i2t`` and ``t2i``, both image x text: per-direction scores)."""
    from pathlib import Path

    from pillar_rerank._validation import check_float_matrix
    from pillar_rerank.inputs import Relevance
    from pillar_rerank.io import load_array, load_direction_pair

    if Path(sims).suffix != ".npz":
        return load_retrieval_set(sims=sims, txt_to_img=txt2img, captions_per_image=captions_per_image,
                                  name=name)
    i2t, t2i = load_direction_pair(sims, name=name)
    check_float_matrix(i2t, name=f"{name}[i2t]", source=str(sims))
    relevance = Relevance.from_arguments(
        n_images=i2t.shape[0], n_texts=i2t.shape[1], captions_per_image=captions_per_image,
        txt_to_img=None if txt2img is None else load_array(txt2img, name="--txt2img"),
        source=None if txt2img is None else str(txt2img))
    return RetrievalSet(relevance=relevance, scores=i2t, t2i_scores=t2i, name=name)


def overwrite_option(func: Callable) -> Callable:
    return click.option("--overwrite", is_flag=True, help="Replace an existing output file.")(func)


def _check_memory(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from pillar_rerank.utils.blocks import parse_bytes

    if value is None:
        return None
    try:
        if parse_bytes(value) <= 0:
            raise ValueError
    except (ValueError, TypeError, OverflowError) as exc:
        raise click.BadParameter(
            f"expected a finite size such as 4GB or 512MiB (at most 1 EiB); got {value!r}."
        ) from exc
    return value


def prepare_cache_dir(cache_dir: str | None) -> str | None:
    """``--cache DIR``: created (with its parents) when missing, and checked to be writable."""
    from pathlib import Path

    from pillar_rerank.exceptions import InputFileError
    from pillar_rerank.io import check_writable_folder

    if cache_dir is None:
        return None
    folder = Path(cache_dir)
    check_writable_folder(folder, name="--cache")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # e.g. a file of that name
        raise InputFileError(
            f"--cache ({folder}): cannot create the folder ({exc.strerror or exc})."
        ) from exc
    return cache_dir


def input_building_options(func: Callable) -> Callable:
    """--max-memory and --cache: how LeaPRR's inputs (neighbours, lists) are built and kept."""
    func = click.option(
        "--cache", "cache_dir", type=click.Path(file_okay=False), default=None,
        help="Folder (created if missing) where the built lists are cached (one versioned sub-folder per "
        "side, named by a hash of the inputs and settings) and reused by later fit/apply runs.",
    )(func)
    return click.option(
        "--max-memory", callback=_check_memory, default=None,
        help="Bound on what input building allocates beyond the inputs, e.g. 4GB (results do not "
        "depend on it). Default: blocks of a few hundred MiB.",
    )(func)


@contextlib.contextmanager
def echo_warnings() -> Iterator[None]:
    """Show the library's UserWarnings raised inside the block as ``warning: ...`` lines on stderr."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        try:
            yield
        finally:
            seen = set()
            for w in caught:
                text = str(w.message)
                if issubclass(w.category, UserWarning) and text not in seen:
                    seen.add(text)
                    click.echo(f"warning: {text}", err=True)
                elif not issubclass(w.category, UserWarning):
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
