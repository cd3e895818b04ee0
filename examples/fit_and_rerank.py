"""Fit LeaPRR on the bundled demo data and re-rank its test side, from Python.

The demo data (``pillar_rerank.datasets.load_demo``) is a small real image-text set: 1000 gallery
items x 4000 captions per side, as two-tower embeddings. LeaPRR is trained on the ``train`` side
(a reduced CPU configuration: the paper's model is much larger) and re-ranks the ``test`` side's
score matrix; recalls before and after are printed.

Run from the repository root::

    python examples/fit_and_rerank.py --epochs 3
"""

from __future__ import annotations

import argparse
import time

from pillar_rerank.config import LeaPRRConfig
from pillar_rerank.datasets import load_demo
from pillar_rerank.metrics import recall_metrics
from pillar_rerank.reranker import PillarReranker

KEYS = ("i2t_R@1", "i2t_R@5", "t2i_R@1", "t2i_R@5", "RSUM")


def small_config(epochs: int, **changes) -> LeaPRRConfig:
    """A reduced LeaPRR configuration that trains in seconds on a CPU."""
    return LeaPRRConfig(n_pillars=16, embed_dim=64, depth=1, num_heads=4, epochs=epochs, batch_size=256,
                        eval_every=10_000, seed=0, device="cpu", **changes)


def demo_sides(train_images: int | None = None):
    """The demo train and test sides; optionally only the first ``train_images`` training items."""
    import numpy as np

    demo = load_demo()
    train = demo["train"]
    if train_images is not None:
        train = train.subset_images(np.arange(train_images), name="demo_train_subset")
    return train, demo["test"]


def show(name: str, metrics: dict[str, float]) -> None:
    print(f"{name:<22}" + " ".join(f"{k} {metrics[k]:6.2f}" for k in KEYS))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3, help="LeaPRR training epochs.")
    parser.add_argument("--train-images", type=int, default=None,
                        help="Train on the first N gallery items of the train side only (quick runs).")
    args = parser.parse_args()
    train, test = demo_sides(args.train_images)
    show("two-tower scores", recall_metrics(test.similarity(), test.relevance))
    start = time.perf_counter()
    model = PillarReranker(small_config(args.epochs)).fit(train, verbose=False)
    reranked = model.rerank(test)  # a new image x text matrix; the input is not modified
    show("LeaPRR", recall_metrics(reranked, test.relevance))
    print(f"fit + re-rank in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
