"""Train a small alignment head between two frozen text encoders, then re-rank it with LeaPRR.

The data is the real COCO caption proxy in ``../shared/data/caption_xenc`` (see its README): the
gallery item of image i is the multilingual-e5 embedding of its caption slot 0, the queries are
the all-MiniLM embeddings of slots 1-4. Its own baseline is the ridge map ``W`` (e5 -> MiniLM).

Protocol (nothing is tuned on the evaluation set):

1. Training side ``coco1k_dev``: images 0-799 train the head, images 800-999 choose the epoch
   (dev RSUM) and serve as LeaPRR's dev side.
2. Every loss trains the *same* head (``--head``, ``--embed-dim``) with the same budget
   (``--epochs``, ``--batch-size``, ``--lr``, ``--seed``); its scores on ``coco5k_test`` are
   exported in the format ``rerank fit/apply/eval`` read.
3. Each result (and the ridge baseline) is re-ranked by LeaPRR trained on the head's own scores of
   the training images (a reduced CPU configuration, printed with the table).

Run from the repository root::

    python examples/train_backbone_then_rerank.py --json adapters_example.json
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from pathlib import Path

import numpy as np
import torch

from pillar_rerank import Relevance, RetrievalSet
from pillar_rerank.adapters import FeatureSet, HeadConfig, ShrinkTrainer, TrainingConfig, TwoTowerTrainer
from pillar_rerank.io import save_json
from pillar_rerank.metrics import recall_metrics

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "caption_xenc"
LOSS_PARAMS = {
    "infonce": None,
    "vsepp": None,
    "vse0": None,
    "listwise": {"weight": 0.3},
    "lp_hinge": {"margin": 0.2},
}
KEYS = ("i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10", "RSUM")


def load_split(data: Path, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(e5 slot-0 gallery features, MiniLM query features, caption -> image map, proxy gallery)."""
    e5 = np.load(data / f"{split}_e5.npy", allow_pickle=False)
    minilm = np.load(data / f"{split}_minilm.npy", allow_pickle=False)
    index = np.load(data / f"proxy_{split}_txt_index.npy", allow_pickle=False)
    cap2img = np.load(data / f"proxy_{split}_cap2img.npy", allow_pickle=False).astype(np.int64)
    n_images = e5.shape[0] // 5
    # line 5i of the caption files is slot 0 of image i (the README's "image-major" layout)
    gallery = e5[np.arange(n_images) * 5].astype(np.float32)
    proxy = np.load(data / f"proxy_{split}_img.npy", allow_pickle=False).astype(np.float32)
    return gallery, minilm[index].astype(np.float32), cap2img, proxy


def features(gallery, queries, cap2img, images, name) -> FeatureSet:
    rel, caps = Relevance(cap2img, gallery.shape[0]).subset(images)
    return FeatureSet(gallery[images], queries[caps], rel, name=name)


def leaprr_config(args):
    from pillar_rerank.config import LeaPRRConfig

    return LeaPRRConfig(
        n_pillars=args.leaprr_pillars,
        embed_dim=args.leaprr_dim,
        depth=1,
        num_heads=4,
        epochs=args.leaprr_epochs,
        batch_size=256,
        eval_every=10_000,
        seed=args.seed,
        device="cpu",
    )


def rerank_gain(scores_train, scores_dev, scores_test, train, dev, test, config) -> dict[str, float]:
    from pillar_rerank.reranker import PillarReranker

    sets = [
        RetrievalSet(relevance=f.relevance, scores=s, name=f.name)
        for f, s in ((train, scores_train), (dev, scores_dev), (test, scores_test))
    ]
    reranker = PillarReranker(config).fit(sets[0], sets[1], verbose=False)
    return recall_metrics(reranker.rerank(sets[2]), test.relevance)


def fmt(metrics):
    return " ".join(f"{metrics[k]:6.2f}" for k in KEYS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--losses", nargs="+", default=list(LOSS_PARAMS), choices=list(LOSS_PARAMS))
    parser.add_argument(
        "--distill",
        action="store_true",
        help="Also distil the best head into a 64-d student (Shrink) and re-rank it.",
    )
    parser.add_argument(
        "--head",
        default="linear",
        choices=["linear", "mlp"],
        help="Gallery-side head (chosen by dev RSUM among linear/linear, linear/identity, "
        "mlp/identity with InfoNCE).",
    )
    parser.add_argument(
        "--text-head",
        default="identity",
        choices=["identity", "linear", "mlp"],
        help="Query-side head (identity keeps the MiniLM space).",
    )
    parser.add_argument("--embed-dim", type=int, default=384)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument(
        "--batch-size",
        type=int,
        default=64,
        help="64 keeps the listwise loss (O(B^3) per step) affordable on CPU.",
    )
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-rerank", action="store_true", help="Skip the LeaPRR step.")
    parser.add_argument("--leaprr-epochs", type=int, default=1)
    parser.add_argument("--leaprr-pillars", type=int, default=32)
    parser.add_argument("--leaprr-dim", type=int, default=128)
    parser.add_argument("--out", type=Path, default=None, help="Export each head's coco5k_test scores here.")
    parser.add_argument("--json", type=Path, default=None, help="Write the table to this JSON file.")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument(
        "--threads", type=int, default=1, help="Intra-op threads (1 is fastest on shared cores)."
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    if not (args.data / "proxy_coco5k_test_img.npy").is_file():
        raise SystemExit(f"shared data not found in {args.data} (pass --data)")

    g_dev, q_dev, c_dev, proxy_dev = load_split(args.data, "coco1k_dev")
    g_test, q_test, c_test, proxy_test = load_split(args.data, "coco5k_test")
    train = features(g_dev, q_dev, c_dev, np.arange(0, 800), "coco1k_dev[0:800]")
    dev = features(g_dev, q_dev, c_dev, np.arange(800, 1000), "coco1k_dev[800:1000]")
    test = features(g_test, q_test, c_test, np.arange(g_test.shape[0]), "coco5k_test")
    budget = {
        "head": args.head,
        "text_head": args.text_head,
        "embed_dim": args.embed_dim,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "device": "cpu",
    }
    head = HeadConfig(kind=args.head, text_kind=args.text_head, embed_dim=args.embed_dim)
    training = TrainingConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed, device="cpu"
    )
    config = None if args.no_rerank else leaprr_config(args)

    rows = []

    def write_json(complete: bool) -> None:
        """Rewrite the JSON after every row, so a long run's finished rows are never lost."""
        if args.json is None:
            return
        result = {
            "description": "Alignment head (e5 slot-0 gallery -> MiniLM query captions) trained on "
            "coco1k_dev images 0-799 with each loss, epoch chosen on images 800-999; evaluated on "
            "coco5k_test (20,000 queries, 5,000 gallery items; ties broken by lower gallery index).",
            "budget": budget,
            "loss_params": {k: LOSS_PARAMS[k] for k in args.losses},
            "leaprr_config": None if config is None else dataclasses.asdict(config),
            "leaprr_note": None
            if config is None
            else (
                "Reduced CPU configuration (not the paper's): n_pillars, embed_dim, depth=1, num_heads=4, "
                "epochs and batch_size as listed; LeaPRR trained on the head's scores of coco1k_dev "
                "images 0-799, dev 800-999."
            ),
            "rows": rows,
        }
        result["complete"] = complete
        save_json(args.json, result, overwrite=args.overwrite or bool(rows[:-1]) or complete, name="--json")

    def record(name, train_s, dev_s, test_s, seconds, extra=None):
        base = recall_metrics(test_s, test.relevance)
        row = {"method": name, "test": base, "train_seconds": round(seconds, 1), **(extra or {})}
        if config is not None:
            start = time.perf_counter()
            row["test_leaprr"] = rerank_gain(train_s, dev_s, test_s, train, dev, test, config)
            row["leaprr_seconds"] = round(time.perf_counter() - start, 1)
            row["leaprr_gain_rsum"] = row["test_leaprr"]["RSUM"] - base["RSUM"]
        rows.append(row)
        line = f"{name:<22} {fmt(base)}  [{seconds:.0f}s]"
        if config is not None:
            line += (
                f"   | LeaPRR {fmt(row['test_leaprr'])}  ({row['leaprr_gain_rsum']:+.2f}) "
                f"[{row['leaprr_seconds']:.0f}s]"
            )
        print(line, flush=True)
        write_json(complete=False)

    print(f"head budget (same for every loss): {budget}")
    if config is not None:
        print(
            f"LeaPRR: reduced CPU configuration, not the paper's: n_pillars={config.n_pillars}, "
            f"embed_dim={config.embed_dim}, depth={config.depth}, num_heads={config.num_heads}, "
            f"epochs={config.epochs}, batch_size={config.batch_size}, list_len_i2t={config.list_len_i2t}, "
            f"list_len_t2i={config.list_len_t2i}; trained on the head's scores of coco1k_dev 0-799, "
            "dev 800-999"
        )
    print(f"{'method':<22} {'  '.join(KEYS)}   (coco5k_test)")
    # the proxy's ridge map W (fitted on all of coco1k_dev by the data's authors)
    record(
        "ridge W (proxy)",
        proxy_dev[:800] @ train.text_features.T,
        proxy_dev[800:] @ dev.text_features.T,
        proxy_test @ test.text_features.T,
        0.0,
    )
    trainers = {}
    for loss in args.losses:
        start = time.perf_counter()
        trainer = TwoTowerTrainer(
            loss=loss, loss_params=LOSS_PARAMS[loss], head=head, training=training
        ).fit(train, dev)
        seconds = time.perf_counter() - start
        trainers[loss] = trainer
        if args.out is not None:
            trainer.export_scores(args.out / loss, test, overwrite=args.overwrite)
        record(
            f"head + {loss}",
            trainer.score(train),
            trainer.score(dev),
            trainer.score(test),
            seconds,
            {"best_epoch": trainer.best_epoch_, "dev_rsum": trainer.best_dev_rsum_},
        )
    if args.distill and trainers:
        teacher_name = max(trainers, key=lambda k: trainers[k].best_dev_rsum_)
        start = time.perf_counter()
        student = ShrinkTrainer(
            trainers[teacher_name],
            teacher_scale=16.0,
            student_scale=16.0,
            head=head.replace(embed_dim=64, text_kind="linear"),
            training=training,
        ).fit(train, dev)
        record(
            f"shrink {teacher_name}->64d lin",
            student.score(train),
            student.score(dev),
            student.score(test),
            time.perf_counter() - start,
            {"best_epoch": student.best_epoch_, "dev_rsum": student.best_dev_rsum_},
        )

    write_json(complete=True)
    if args.json is not None:
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
