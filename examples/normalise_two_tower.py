"""Two-tower embeddings -> a training-free normaliser -> evaluation.

A dual encoder's image and text embeddings (the bundled demo data) give the score matrix
``images @ texts.T``. Hubness normalisers correct each gallery item's score with statistics of a
*query bank*: training-side queries, never the test queries. This example runs a few of them in
both directions with the ``train`` side as the bank and prints the recalls of the ``test`` side.

Run from the repository root::

    python examples/normalise_two_tower.py --methods nnn csls inverted_softmax
"""

from __future__ import annotations

import argparse

from pillar_rerank.baselines import apply_both, bank_from_embeddings, get_baseline
from pillar_rerank.datasets import load_demo
from pillar_rerank.metrics import recall_metrics

KEYS = ("i2t_R@1", "i2t_R@5", "t2i_R@1", "t2i_R@5", "RSUM")


def show(name: str, metrics: dict[str, float]) -> None:
    print(f"{name:<18}" + " ".join(f"{k} {metrics[k]:6.2f}" for k in KEYS))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=["nnn", "csls", "inverted_softmax", "dn"],
                        help="Registry names (`rerank baseline --list`).")
    args = parser.parse_args()
    demo = load_demo()
    train, test = demo["train"], demo["test"]
    show("two-tower", recall_metrics(test.similarity(), test.relevance))
    bank = bank_from_embeddings(train, test)  # train-side queries x test gallery, both directions
    for name in args.methods:
        out = apply_both(get_baseline(name), test, bank)  # i2t in out.scores, t2i in out.t2i_scores
        show(name, recall_metrics(out.scores, out.relevance, t2i_scores=out.t2i_scores))


if __name__ == "__main__":
    main()
