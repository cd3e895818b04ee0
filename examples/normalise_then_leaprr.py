"""LeaPRR after a training-free normaliser (NNN), against each alone, on the bundled demo data.

With ``LeaPRRConfig(normalize="nnn")`` the model normalises every score matrix it sees with NNN
first (its query bank: the training side's embeddings, stored with the model) and learns to
re-rank the normalised scores; ``rerank`` then applies both steps. NNN gives each direction its
own matrix: ``rerank_both`` keeps them apart (one re-ranked matrix per direction, like
``apply_both``), where ``rerank`` returns their mean (the paper's single matrix).

Run from the repository root::

    python examples/normalise_then_leaprr.py --epochs 3
"""

from __future__ import annotations

import argparse

import numpy as np

from pillar_rerank.baselines import NNN, apply_both, bank_from_embeddings
from pillar_rerank.config import LeaPRRConfig
from pillar_rerank.datasets import load_demo
from pillar_rerank.metrics import recall_metrics
from pillar_rerank.reranker import PillarReranker

KEYS = ("i2t_R@1", "i2t_R@5", "t2i_R@1", "t2i_R@5", "RSUM")


def show(name: str, metrics: dict[str, float]) -> None:
    print(f"{name:<30}" + " ".join(f"{k} {metrics[k]:6.2f}" for k in KEYS))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3, help="LeaPRR training epochs.")
    parser.add_argument("--train-images", type=int, default=None,
                        help="Train on the first N gallery items of the train side only (quick runs).")
    args = parser.parse_args()
    demo = load_demo()
    train, test = demo["train"], demo["test"]
    if args.train_images is not None:
        train = train.subset_images(np.arange(args.train_images), name="demo_train_subset")
    nnn = {"k": 16, "alpha": 0.75}
    out = apply_both(NNN(**nnn), test, bank_from_embeddings(demo["train"], test))
    show("two-tower", recall_metrics(test.similarity(), test.relevance))
    show("NNN", recall_metrics(out.scores, out.relevance, t2i_scores=out.t2i_scores))
    for normalize in (None, "nnn"):
        cfg = LeaPRRConfig(n_pillars=16, embed_dim=64, depth=1, num_heads=4, epochs=args.epochs,
                           batch_size=256, eval_every=10_000, seed=0, device="cpu", normalize=normalize,
                           normalize_params=nnn if normalize else {})
        model = PillarReranker(cfg).fit(train, verbose=False)
        name = "NNN -> LeaPRR" if normalize else "LeaPRR"
        show(name, recall_metrics(model.rerank(test), test.relevance))
        both = model.rerank_both(test)
        per_direction = recall_metrics(both.scores, both.relevance, t2i_scores=both.t2i_scores)
        show(f"{name} (per direction)", per_direction)


if __name__ == "__main__":
    main()
