"""pillar_rerank/lists/{tensorfile,fingerprint,cached,build}.py: lists files, cache directories,
validation on read, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from safetensors.torch import save_file

from pillar_rerank.config import LeaPRRConfig
from pillar_rerank.exceptions import CheckpointError, InputFileError, InvalidParameterError
from pillar_rerank.inputs import Relevance, RetrievalSet
from pillar_rerank.lists import LIST_FIELDS, QueryLists
from pillar_rerank.lists.build import build_cache
from pillar_rerank.lists.builder import ListBuilder
from pillar_rerank.lists.cached import CachedLists
from pillar_rerank.lists.fingerprint import cache_meta, check_meta
from pillar_rerank.lists.tensorfile import FORMAT, load_lists, save_lists

CFG = LeaPRRConfig(n_pillars=6, list_len_i2t=5, list_len_t2i=3, graph_neighbors=3)


def assert_lists_equal(a: QueryLists, b: QueryLists) -> None:
    for name in LIST_FIELDS:
        assert torch.equal(getattr(a, name), getattr(b, name)), name


@pytest.fixture
def data() -> RetrievalSet:
    rng = np.random.default_rng(0)
    counts = rng.integers(1, 4, size=40)                   # 1..3 captions per image
    t2i = rng.permutation(np.repeat(np.arange(40), counts))
    img = rng.standard_normal((40, 12)).astype(np.float32)
    txt = img[t2i] + 0.5 * rng.standard_normal((t2i.size, 12)).astype(np.float32)
    return RetrievalSet(relevance=Relevance(t2i, 40), image_embeddings=img, text_embeddings=txt, name="toy")


@pytest.fixture
def builder(data) -> ListBuilder:
    return ListBuilder.from_data(data, CFG)


# ------------------------------------------------------------------ lists files
def test_save_and_load_lists_round_trip(tmp_path, builder):
    lists = {"image": builder.image_lists(torch.arange(10)), "text": builder.text_lists(torch.arange(7))}
    path = save_lists(tmp_path / "l.safetensors", lists, {"split": "train", "n": 3})
    for mmap in (False, True):
        back = load_lists(path, {"split": "train", "n": 3}, mmap=mmap)
        assert sorted(back) == ["image", "text"]
        assert_lists_equal(back["image"], lists["image"])
        assert_lists_equal(back["text"], lists["text"])
    # plain safetensors: any reader gets the tensors and our header
    raw = load_file(str(path))
    np.testing.assert_array_equal(raw["image.features"], lists["image"].features.numpy())


def test_load_lists_meta_mismatch_names_the_key(tmp_path, builder):
    path = save_lists(tmp_path / "l.safetensors", {"image": builder.image_lists(torch.arange(3))}, {"n": 3})
    with pytest.raises(CheckpointError, match=r"n: 3 in the cache, 4 expected"):
        load_lists(path, {"n": 4})


def test_save_lists_rejects_bad_names_and_values(tmp_path, builder):
    with pytest.raises(InvalidParameterError, match="without '.'"):
        save_lists(tmp_path / "x.safetensors", {"a.b": builder.image_lists(torch.arange(2))})
    with pytest.raises(ValueError, match="must be a QueryLists"):
        save_lists(tmp_path / "x.safetensors", {"a": torch.zeros(2)})
    assert not (tmp_path / "x.safetensors").exists()


def test_corrupt_truncated_foreign_and_missing_files(tmp_path, builder):
    path = save_lists(tmp_path / "l.safetensors", {"image": builder.image_lists(torch.arange(5))})
    blob = path.read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(blob[:-100])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_lists(tmp_path / "trunc.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(CheckpointError, match="not a valid pillar-rerank safetensors file"):
        load_lists(tmp_path / "junk.safetensors")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="not a valid pillar-rerank"):
        load_lists(tmp_path / "model.safetensors")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "v9.safetensors"),
              metadata={"format": FORMAT, "format_version": "9", "meta": "{}"})
    with pytest.raises(CheckpointError, match="format version 9"):
        load_lists(tmp_path / "v9.safetensors")
    with pytest.raises(InputFileError, match="not found"):
        load_lists(tmp_path / "absent.safetensors")


# ------------------------------------------------------------------ cache directories
def test_build_cache_serves_the_builders_lists_across_shards(tmp_path, data, builder):
    cached = build_cache(data, CFG, tmp_path / "c", max_memory="100MB", shard_queries=16)
    shards = sorted(p.name for p in (tmp_path / "c").glob("*-*.safetensors"))
    assert shards[0] == "image-00000.safetensors" and len(shards) == 3 + -(-data.n_texts // 16)
    assert not (tmp_path / "c.partial").exists()
    ids = torch.tensor([39, 0, 17, 16, 15, 39])                 # crosses shards, repeats, any order
    assert_lists_equal(cached.image_lists(ids), builder.image_lists(ids))
    tids = torch.randperm(data.n_texts, generator=torch.Generator().manual_seed(0))[:25]
    assert_lists_equal(cached.text_lists(tids), builder.text_lists(tids))
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    for a, b in zip(cached.mapped_lists(tids, g1), builder.mapped_lists(tids, g2)):
        assert_lists_equal(a, b)
    assert cached.n_images == 40 and cached.n_texts == data.n_texts and cached.intra_source == "embeddings"
    np.testing.assert_array_equal(cached.neighbors.t2t.ids, builder.neighbors.t2t.ids)
    assert cached.image_lists(torch.tensor([], dtype=torch.int64)).n_queries == 0
    with pytest.raises(ValueError, match=r"image_ids: 1 ids outside \[0, 40\)"):
        cached.image_lists(torch.tensor([40]))


def test_mapped_lists_need_the_data(tmp_path, data):
    build_cache(data, CFG, tmp_path / "c")
    reopened = CachedLists(tmp_path / "c")
    reopened.text_lists(torch.arange(3))                         # stored lists need no data
    with pytest.raises(InvalidParameterError, match="need the retrieval set"):
        reopened.mapped_lists(torch.arange(3), torch.Generator())


def test_existing_cache_is_reused_or_refused(tmp_path, data, monkeypatch):
    build_cache(data, CFG, tmp_path / "c")

    def no_search(*args, **kwargs):
        raise AssertionError("searched again")

    monkeypatch.setattr(ListBuilder, "from_data", no_search)
    assert build_cache(data, CFG, tmp_path / "c").n_images == 40   # same meta: reused
    other = CFG.replace(n_pillars=5)
    with pytest.raises(CheckpointError, match=r"config\.n_pillars: 6 in the cache, 5 expected"):
        build_cache(data, other, tmp_path / "c")
    monkeypatch.undo()
    rebuilt = build_cache(data, other, tmp_path / "c", overwrite=True)
    assert rebuilt.meta["config"]["n_pillars"] == 5
    assert rebuilt.image_lists(torch.arange(2)).features.shape == (2, 5, 10)


def test_meta_tracks_data_and_settings(data):
    meta = cache_meta(data, CFG)
    assert meta["config"]["intra_source"] == "embeddings" and "seed" not in meta["config"]
    assert meta["index"] == "flat"
    changed = RetrievalSet(relevance=data.relevance, image_embeddings=data.image_embeddings + 1,
                           text_embeddings=data.text_embeddings)
    assert cache_meta(changed, CFG)["data"] != meta["data"]
    assert cache_meta(data, CFG, fingerprint="full")["data"]["mode"] == "full"
    assert cache_meta(data, CFG, index="ivf")["index_params"]["nprobe"] == 32
    with pytest.raises(CheckpointError, match="data.arrays.image_embeddings.sha256"):
        check_meta(cache_meta(changed, CFG), meta, where="x")


def test_tampered_truncated_and_incomplete_caches(tmp_path, data):
    build_cache(data, CFG, tmp_path / "c", shard_queries=20)
    shard = tmp_path / "c" / "text-00001.safetensors"
    blob = bytearray(shard.read_bytes())
    blob[-1] ^= 0xFF
    shard.write_bytes(bytes(blob))
    CachedLists(tmp_path / "c")                                   # quick: same size, not noticed
    with pytest.raises(CheckpointError, match="text-00001.safetensors does not match its SHA-256"):
        CachedLists(tmp_path / "c", verify="full")
    shard.write_bytes(bytes(blob[:-8]))
    with pytest.raises(CheckpointError, match="truncated or replaced"):
        CachedLists(tmp_path / "c")
    manifest = tmp_path / "c" / "manifest.json"
    doc = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**doc, "format_version": 0}))
    with pytest.raises(CheckpointError, match="format version 0"):
        CachedLists(tmp_path / "c")
    manifest.write_text(json.dumps({**doc, "complete": False}))
    with pytest.raises(CheckpointError, match="incomplete cache"):
        CachedLists(tmp_path / "c")
    manifest.unlink()
    with pytest.raises(InputFileError, match="not found"):
        CachedLists(tmp_path / "c")


def test_interrupted_build_resumes_without_searching_again(tmp_path, data, builder, monkeypatch):
    with pytest.raises(RuntimeError, match="simulated crash after 3 files"):
        build_cache(data, CFG, tmp_path / "c", shard_queries=16, _crash_after=3)
    assert not (tmp_path / "c").exists() and (tmp_path / "c.partial" / "neighbors.safetensors").exists()

    def no_search(*args, **kwargs):
        raise AssertionError("searched again")

    monkeypatch.setattr(ListBuilder, "from_data", no_search)
    resumed = build_cache(data, CFG, tmp_path / "c", shard_queries=16)
    ids = torch.arange(data.n_texts)
    assert_lists_equal(resumed.text_lists(ids), builder.text_lists(ids))
    assert_lists_equal(resumed.image_lists(torch.arange(40)), builder.image_lists(torch.arange(40)))


def test_second_order_cache_keeps_profiles(tmp_path, data):
    scores_only = RetrievalSet(relevance=data.relevance, scores=data.similarity(), name="scores")
    cfg = CFG.replace(intra_rank=8)
    cached = build_cache(scores_only, cfg, tmp_path / "c")
    builder = ListBuilder.from_data(scores_only, cfg)
    assert cached.intra_source == "second_order" and cached.meta["config"]["intra_rank"] == 8
    tids = torch.arange(0, scores_only.n_texts, 3)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    for a, b in zip(cached.mapped_lists(tids, g1), builder.mapped_lists(tids, g2)):
        assert_lists_equal(a, b)


def test_non_cache_folder_is_not_overwritten(tmp_path, data):
    target = tmp_path / "c"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    with pytest.raises(InputFileError, match="not a pillar-rerank cache"):
        build_cache(data, CFG, target)
    assert (target / "notes.txt").read_text() == "mine"


def test_resume_with_another_shard_size_drops_stale_shards(tmp_path, data, builder):
    with pytest.raises(RuntimeError, match="simulated crash"):
        build_cache(data, CFG, tmp_path / "c", shard_queries=8, _crash_after=9)
    cached = build_cache(data, CFG, tmp_path / "c", shard_queries=50)
    names = sorted(p.name for p in (tmp_path / "c").glob("*.safetensors"))
    assert names == ["image-00000.safetensors", "neighbors.safetensors"] + [
        f"text-{i:05d}.safetensors" for i in range(-(-data.n_texts // 50))]
    ids = torch.arange(data.n_texts)
    assert_lists_equal(cached.text_lists(ids), builder.text_lists(ids))


# ------------------------------------------------------------------ values checked on read (issue 15.16)
def tamper(path, name: str, edit) -> None:
    """Rewrite tensor ``name`` of a safetensors file in place (same size, same header)."""
    blob = bytearray(path.read_bytes())
    n = int.from_bytes(blob[:8], "little")
    entry = json.loads(blob[8:8 + n])[name]
    begin, end = (8 + n + o for o in entry["data_offsets"])
    dtype = {"F32": np.float32, "I64": np.int64, "BOOL": np.bool_}[entry["dtype"]]
    arr = np.frombuffer(bytes(blob[begin:end]), dtype=dtype).copy()
    edit(arr)
    blob[begin:end] = arr.tobytes()
    path.write_bytes(bytes(blob))


@pytest.mark.parametrize("name, edit, message", [
    ("image.features", lambda a: a.__setitem__(5, np.nan), "NaN or inf values in features"),
    ("image.adjacency", lambda a: a.__setitem__(0, np.inf), "NaN or inf values in adjacency"),
    ("image.candidates", lambda a: a.__setitem__(3, 10**6), "candidates outside"),
    ("image.candidates", lambda a: a.__setitem__(0, -1), "candidates outside"),
    ("image.query_ids", lambda a: a.__setitem__(1, 0), "not the rows asked for"),
])
def test_same_size_tampered_shard_is_caught_on_read(tmp_path, data, name, edit, message):
    build_cache(data, CFG, tmp_path / "c", shard_queries=20)
    tamper(tmp_path / "c" / "image-00000.safetensors", name, edit)
    lists = CachedLists(tmp_path / "c")                          # quick open: sizes still agree
    lists.image_lists(torch.arange(20, 40))                       # the untouched shard still reads
    with pytest.raises(CheckpointError, match="image-query lists: .*" + message + ".*Rebuild it: delete"):
        lists.image_lists(torch.arange(0, 20))


def test_tampered_neighbour_file_and_shapes_are_caught(tmp_path, data):
    build_cache(data, CFG, tmp_path / "c", shard_queries=20)
    nb = tmp_path / "c" / "neighbors.safetensors"
    original = nb.read_bytes()
    tamper(nb, "txt_to_img", lambda a: a.__setitem__(0, 999))
    with pytest.raises(CheckpointError, match="caption -> image map"):
        CachedLists(tmp_path / "c")
    nb.write_bytes(original)
    tamper(nb, "i2t.ids", lambda a: a.__setitem__(0, 10**6))
    with pytest.raises(CheckpointError, match="i2t neighbour lists"):
        CachedLists(tmp_path / "c", data=data).builder()
    nb.write_bytes(original)
    manifest = tmp_path / "c" / "manifest.json"
    doc = json.loads(manifest.read_text())
    doc["meta"]["config"]["n_pillars"] = 5                        # shards hold 2 * 6 columns
    manifest.write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match=r"image.features has shape \(20, 5, 12\).*implies"):
        CachedLists(tmp_path / "c")


def test_load_lists_checks_values(tmp_path, builder):
    path = save_lists(tmp_path / "l.safetensors", {"image": builder.image_lists(torch.arange(4))})
    tamper(path, "image.features", lambda a: a.__setitem__(0, np.nan))
    with pytest.raises(CheckpointError, match="NaN or inf values in features"):
        load_lists(path)
