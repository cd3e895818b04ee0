"""Sharded re-ranking of a large test set: rerank_shard on each share of the queries, then merge.

LeaPRR re-scores each query's own candidate list, so the queries can be split into shares
re-ranked independently (on several machines, or ``rerank apply --shard i/n``). Each share is
written as a shard file (its re-scored entries and the model's digest); ``merge`` joins all the
shards into the same matrix as one ``rerank`` call. Shown here on the bundled demo data.

Run from the repository root::

    python examples/sharded_rerank.py --shards 4
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from pillar_rerank.config import LeaPRRConfig
from pillar_rerank.datasets import load_demo
from pillar_rerank.metrics import recall_metrics
from pillar_rerank.reranker import PillarReranker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2, help="LeaPRR training epochs.")
    parser.add_argument("--train-images", type=int, default=None,
                        help="Train on the first N gallery items of the train side only (quick runs).")
    args = parser.parse_args()
    demo = load_demo()
    train, test = demo["train"], demo["test"]
    if args.train_images is not None:
        train = train.subset_images(np.arange(args.train_images), name="demo_train_subset")
    cfg = LeaPRRConfig(n_pillars=16, embed_dim=64, depth=1, num_heads=4, epochs=args.epochs, batch_size=256,
                       eval_every=10_000, seed=0, device="cpu")
    model = PillarReranker(cfg).fit(train, verbose=False)
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i in range(args.shards):  # each iteration could run on its own machine
            shard = model.rerank_shard(test, i, args.shards)
            files.append(shard.save(Path(tmp) / f"shard-{i}-of-{args.shards}.npz"))
            print(f"shard {i}/{args.shards}: {len(np.unique(shard.i2t_rows))} image and "
                  f"{len(np.unique(shard.t2i_cols))} text queries re-ranked")
        merged = model.merge(test, files)
    whole = model.rerank(test)
    print(f"merged == one rerank call: {np.array_equal(merged, whole)}")
    before = recall_metrics(test.similarity(), test.relevance)["RSUM"]
    print(f"RSUM: two-tower {before:.2f}, LeaPRR {recall_metrics(merged, test.relevance)['RSUM']:.2f}")
    if not np.array_equal(merged, whole):
        raise SystemExit("the merged shards differ from one rerank call")


if __name__ == "__main__":
    main()
