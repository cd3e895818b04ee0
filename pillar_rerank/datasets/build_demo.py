"""Regenerate the bundled demo data from ``shared/data/caption_xenc``.

``python -m pillar_rerank.datasets.build_demo [--root DIR] [--out DIR] [--overwrite]`` writes

* ``demo_train.npz``: the ``coco1k_dev`` proxy (1000 gallery items x 4000 query captions);
* ``demo_test.npz``: ``coco5k_test`` fold 0, gallery items 0-999 and the captions the map
  assigns to them (1000 x 4000), with their COCO image and caption ids.

Each archive holds float16 ``image_embeddings`` and ``text_embeddings`` and an int32
``txt_to_img``; written atomically, never unpickled.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from pillar_rerank.datasets.coco import coco_proxy_ids, load_coco_proxy
from pillar_rerank.io import atomic_path, check_output_path
from pillar_rerank.typing import PathLikeStr

PACKAGE_DIR = Path(__file__).resolve().parent
TEST_IMAGES = 1000


def _write(path: Path, arrays: dict[str, np.ndarray], overwrite: bool) -> Path:
    out = check_output_path(path, overwrite=overwrite, name="demo data")
    with atomic_path(out) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    return out


def build_demo(root: PathLikeStr | None = None, out_dir: PathLikeStr = PACKAGE_DIR, *,
               overwrite: bool = False) -> list[Path]:
    """Write ``demo_train.npz`` and ``demo_test.npz`` into ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    train = load_coco_proxy("coco1k_dev", root)
    test_full = load_coco_proxy("coco5k_test", root)
    images = np.arange(TEST_IMAGES)
    test = test_full.subset_images(images)
    image_ids, caption_ids = coco_proxy_ids("coco5k_test", root)
    _, caps = test_full.relevance.subset(images)
    written = []
    for name, data, extra in (
        ("demo_train.npz", train, {}),
        ("demo_test.npz", test, {"image_ids": image_ids[images], "caption_ids": caption_ids[caps]}),
    ):
        arrays = {
            "image_embeddings": np.asarray(data.image_embeddings, dtype=np.float16),
            "text_embeddings": np.asarray(data.text_embeddings, dtype=np.float16),
            "txt_to_img": data.txt_to_img.astype(np.int32),
            **extra,
        }
        written.append(_write(out_dir / name, arrays, overwrite))
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=None, help="caption_xenc folder (default: see shared_data_root)")
    parser.add_argument("--out", default=str(PACKAGE_DIR), help="output folder (default: the package)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing files")
    args = parser.parse_args(argv)
    for path in build_demo(args.root, args.out, overwrite=args.overwrite):
        print(f"{path}  {path.stat().st_size / 2**20:.2f} MiB")


if __name__ == "__main__":  # pragma: no cover
    main()
