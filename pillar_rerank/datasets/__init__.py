"""Data sets: the bundled demo (:func:`load_demo`) and loaders for the shared COCO caption proxy."""

from pillar_rerank.datasets.coco import (
    coco_proxy_ids,
    load_coco_proxy,
    load_cxc_graded,
    load_eccv_positives,
    shared_data_root,
)
from pillar_rerank.datasets.demo import load_demo, load_demo_ids

__all__ = [
    "coco_proxy_ids",
    "load_coco_proxy",
    "load_cxc_graded",
    "load_demo",
    "load_demo_ids",
    "load_eccv_positives",
    "shared_data_root",
]
