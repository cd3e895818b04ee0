"""Data sets: the bundled demo (:func:`load_demo`) and loaders for the shared caption proxies.

COCO (:func:`load_coco_proxy`) and Flickr30K (:func:`load_f30k_proxy`).
"""

from pillar_rerank.datasets.coco import (
    coco_proxy_ids,
    load_coco_proxy,
    load_cxc_graded,
    load_eccv_positives,
    shared_data_root,
)
from pillar_rerank.datasets.demo import load_demo, load_demo_ids
from pillar_rerank.datasets.f30k import f30k_build_info, f30k_cache_dir, f30k_data_root, load_f30k_proxy

__all__ = [
    "coco_proxy_ids",
    "f30k_build_info",
    "f30k_cache_dir",
    "f30k_data_root",
    "load_coco_proxy",
    "load_cxc_graded",
    "load_demo",
    "load_demo_ids",
    "load_eccv_positives",
    "load_f30k_proxy",
    "shared_data_root",
]
