"""Batches from DataLoader workers (heads/batch.py) against item-by-item reads and an
independent collate; float16 rows widened by torch (heads/data.py ``as_float32``) against
numpy's cast.

``_reference`` below is the collate as it was before batches moved to one shared buffer,
written as plain loops; every batch of a DataLoader (0 and 2 workers) must equal it on the
batch's own ``ds[i]``, bit for bit: keys and their order, dtypes, shapes, padding and masks.
The store here has videos of 4-12 frames for N = 10 (padded ``cls``/``patch``), questions of
3 and 5 candidates (padded ``cand``) and of 2 and 5 tokens (padded ``text_tokens``); the
synthetic temporal store adds the teacher's ``imageqa``.

Mutations tried (each fails a test here):

1. ``_allocate`` giving a field the offset after its own (fields overlap in the shared
   buffer): ``test_worker_batches_equal_item_by_item``, ``test_worker_batch_is_one_shared_buffer``.
2. ``collate`` allocating each tensor on its own in workers too (``shared=False``: one
   descriptor per tensor again): ``test_worker_batch_is_one_shared_buffer`` (11 storages).
3. offsets not rounded up to ``ALIGN`` (``total += nbytes``): a float field lands at an odd
   byte offset after a bool mask and its ``view`` fails: ``test_segments_draws_unchanged_in_workers``.
4. the padded length taken from the first sample (``first[name].shape[0]``): every test that
   collates samples of unequal lengths, ``test_collate_by_hand`` first.
5. the mask set on ``[b, : rows + 1]`` (one padded row marked real): ``test_collate_by_hand``
   and the reference comparisons.
6. ``as_float32`` widening through bfloat16 (float16's low mantissa bits lost):
   ``test_as_float32_is_numpys_cast``.
7. ``as_float32`` returning the float16 tensor unwidened: ``test_as_float32_is_numpys_cast``.
8. ``as_float32`` handing a big-endian array to ``torch.from_numpy`` (no native-order check):
   ``test_as_float32_is_numpys_cast``.
"""

from __future__ import annotations

import dataclasses
import pickle
from multiprocessing.reduction import ForkingPickler

import numpy as np
import pytest
import torch
import torch.multiprocessing.reductions as reductions
from torch.utils.data import DataLoader

import vqacache.heads.batch as batch_module
from vqacache.cache_spec import open_store
from vqacache.heads.batch import collate
from vqacache.heads.data import QADataset, as_float32
from vqacache.heads.synthetic import make_temporal_store, synthetic_spec

FRAMES = [6, 9, 12, 4, 10, 7]  # per video; N = 10 pads the short ones


def _reference(samples):
    """The batch of ``samples`` by plain loops (independent of heads/batch.py)."""
    B = len(samples)
    out = {
        "index": torch.tensor([s["index"] for s in samples]),
        "qid": [s["qid"] for s in samples],
        "video_id": [s["video_id"] for s in samples],
        "qtype": [s["qtype"] for s in samples],
        "text": torch.stack([s["text"] for s in samples]),
        "answer": torch.tensor([s["answer"] for s in samples], dtype=torch.int64),
    }
    for name in ("question", "candidates"):
        if name in samples[0]:
            out[name] = [s[name] for s in samples]
    for name, mask in (("cls", "frame_mask"), ("patch", "patch_mask"), ("cand", "cand_mask"),
                       ("text_tokens", "text_token_mask")):
        if name not in samples[0]:
            continue
        n = max(len(s[name]) for s in samples)
        values = torch.zeros((B, n, *samples[0][name].shape[1:]), dtype=samples[0][name].dtype)
        real = torch.zeros((B, n), dtype=torch.bool)
        for b, s in enumerate(samples):
            for r in range(len(s[name])):
                values[b, r] = s[name][r]
                real[b, r] = True
        out[name], out[mask] = values, real
    if any("imageqa" in s for s in samples):
        C = max([out["cand"].shape[1] if "cand" in out else 0] + [s["imageqa"].shape[1] for s in samples if "imageqa" in s])
        teacher = torch.zeros(B, out["cls"].shape[1], C)
        for b, s in enumerate(samples):
            if "imageqa" in s:
                for f in range(s["imageqa"].shape[0]):
                    for c in range(s["imageqa"].shape[1]):
                        teacher[b, f, c] = s["imageqa"][f, c]
        out["imageqa"], out["has_imageqa"] = teacher, torch.tensor(["imageqa" in s for s in samples])
    return out


def _assert_identical(got, want):
    assert list(got) == list(want)
    for key, value in want.items():
        if isinstance(value, torch.Tensor):
            assert got[key].dtype == value.dtype and got[key].shape == value.shape, key
            assert torch.equal(got[key], value), key  # bit for bit (no NaN in these stores)
        else:
            assert got[key] == value, key


def test_as_float32_is_numpys_cast():
    """Every float16 bit pattern widens as numpy casts it (signalling NaNs only quieted)."""
    halves = np.arange(2**16, dtype=np.uint16).view(np.float16).reshape(256, 256)
    got = as_float32(halves.copy())
    assert got.dtype == torch.float32 and got.shape == (256, 256)
    want = halves.astype(np.float32)
    nan = np.isnan(halves)
    np.testing.assert_array_equal(got.numpy().view(np.uint32)[~nan], want.view(np.uint32)[~nan])
    assert np.isnan(got.numpy()[nan]).all()
    single = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert torch.equal(as_float32(single), torch.from_numpy(single)) and as_float32(single).dtype == torch.float32
    assert torch.equal(as_float32(single.astype(">f4")), torch.from_numpy(single))  # big-endian: numpy's cast


@pytest.fixture(scope="module")
def varied(tmp_path_factory):
    """Videos of FRAMES frames; two questions each: 3 or 5 candidates, 2 or 5 tokens."""
    path = tmp_path_factory.mktemp("loader") / "v.zarr"
    spec = dataclasses.replace(synthetic_spec(shape="loader-test"), dtype="float16")  # as real stores
    store = open_store(path, "a", spec=spec, dataset="synthetic-loader-test")
    rng = np.random.default_rng(0)
    for v, n in enumerate(FRAMES):
        vid = f"v{v}"
        with store.write_video(vid, {"source": {"synthetic": "loader-test"}}) as w:
            w.append(cls=rng.standard_normal((n, 8), np.float32), patch=rng.standard_normal((n, 2, 4), np.float32),
                     pts=np.arange(n) / 7.5, src_index=np.arange(n), is_repeat=np.zeros(n, bool))
        entries = [{"qid": f"{vid}_{q}", "question": f"question {v} {q}", "candidates": [f"c{c}" for c in range(3 + 2 * q)],
                    "answer": q, "qtype": "CW", "start": None, "end": None} for q in range(2)]
        store.write_questions("train", vid, entries, {
            "text": rng.standard_normal((2, 8), np.float32),
            "text_tokens": rng.standard_normal((2, 5, 3), np.float32), "text_len": np.array([2, 5]),
            "cand": rng.standard_normal((2, 5, 8), np.float32),
            "cand_tokens": np.zeros((2, 5, 1, 3), np.float32), "cand_len": np.ones((2, 5), np.int64),
        })
    return path


@pytest.fixture(scope="module")
def temporal(tmp_path_factory):
    return make_temporal_store(tmp_path_factory.mktemp("loader") / "t.zarr", {"train": 6}, n_frames=12, dim=8, n_patches=2)


def _datasets(varied, temporal):
    return {
        "all-frames+tokens": QADataset(varied, "train", num_frames=10, patch_frames="all", text_tokens=True),
        "uniform-patches+strings": QADataset(varied, "train", num_frames=10, patch_frames="uniform",
                                             num_patch_frames=3, text="strings"),
        "segments-training": QADataset(varied, "train", num_frames=5, patch_frames="segments", training=True),
        "teacher": QADataset(temporal.path, "train", num_frames=12, patch_frames="all"),
    }


def test_collate_by_hand():
    """Two samples of 1 and 3 frames (E = 2) and 2 and 1 candidates: zeros and masks by hand."""
    a = {"index": 4, "qid": "a", "video_id": "x", "qtype": "", "answer": 1, "text": torch.tensor([1.0, 2.0]),
         "cls": torch.tensor([[1.0, 1.0]]), "cand": torch.tensor([[5.0, 5.0], [6.0, 6.0]])}
    b = {"index": 7, "qid": "b", "video_id": "y", "qtype": "CW", "answer": 0, "text": torch.tensor([3.0, 4.0]),
         "cls": torch.tensor([[2.0, 2.0], [3.0, 3.0], [4.0, 4.0]]), "cand": torch.tensor([[7.0, 7.0]])}
    batch = collate([a, b])
    assert torch.equal(batch["cls"], torch.tensor([[[1.0, 1.0], [0, 0], [0, 0]], [[2.0, 2.0], [3.0, 3.0], [4.0, 4.0]]]))
    assert batch["frame_mask"].tolist() == [[True, False, False], [True, True, True]]
    assert torch.equal(batch["cand"], torch.tensor([[[5.0, 5.0], [6.0, 6.0]], [[7.0, 7.0], [0, 0]]]))
    assert batch["cand_mask"].tolist() == [[True, True], [True, False]]
    assert batch["index"].tolist() == [4, 7] and batch["answer"].dtype == torch.int64
    assert list(batch) == ["index", "qid", "video_id", "qtype", "text", "answer", "cls", "frame_mask", "cand", "cand_mask"]


def test_collate_in_process_equals_reference(varied, temporal):
    for name, ds in _datasets(varied, temporal).items():
        samples = [ds[i] for i in range(len(ds))]
        batch = collate(samples)
        assert type(batch) is dict, name
        _assert_identical(batch, _reference(samples))


def test_worker_batches_equal_item_by_item(varied, temporal):
    """Each batch from 2 workers (shuffled) equals the reference collate of its own ``ds[i]``;
    the segments draw is per worker, so item-by-item reads are compared with 0 workers."""
    for name, ds in _datasets(varied, temporal).items():
        for workers in (0, 2):
            loader = DataLoader(ds, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(1),
                                collate_fn=collate, num_workers=workers)
            batches = list(loader)
            assert sorted(i for b in batches for i in b["index"].tolist()) == list(range(len(ds))), name
            for batch in batches:
                assert type(batch) is dict
                if name == "segments-training":  # random frames: the layout only, values per worker RNG
                    assert batch["cls"].shape[1:] == (5, 8) and bool(batch["frame_mask"].all())
                    continue
                _assert_identical(batch, _reference([ds[i] for i in batch["index"].tolist()]))


def test_segments_draws_unchanged_in_workers(varied):
    """Random segment frames through workers equal the same loader's before this change: each
    worker draws item by item in index order from its seeded RNG, so two runs agree, and a
    batch equals the reference collate of the worker's own draws (replayed in the test)."""
    ds = QADataset(varied, "train", num_frames=5, patch_frames="segments", training=True)
    runs = [list(DataLoader(ds, batch_size=3, shuffle=True, generator=torch.Generator().manual_seed(2),
                            collate_fn=collate, num_workers=2)) for _ in range(2)]
    for a, b in zip(*runs):
        _assert_identical(a, b)
    loader = DataLoader(ds, batch_size=3, shuffle=True, generator=torch.Generator().manual_seed(2), num_workers=2,
                        collate_fn=lambda samples: (collate(samples), _reference(samples)))
    for got, want in loader:
        _assert_identical(got, want)


def test_worker_batch_is_one_shared_buffer(varied, monkeypatch):
    """In a worker, a batch pickles as one storage: one descriptor for the training process to
    fetch (one ``rebuild_storage_*`` call when unpickled), not one per tensor."""
    ds = QADataset(varied, "train", num_frames=10, patch_frames="all", text_tokens=True)
    samples = [ds[i] for i in range(4)]
    monkeypatch.setattr(batch_module, "get_worker_info", lambda: object())  # as in a worker
    data = ForkingPickler.dumps(collate(samples))
    calls = []
    for name in ("rebuild_storage_fd", "rebuild_storage_filename"):
        real = getattr(reductions, name)
        monkeypatch.setattr(reductions, name, lambda *a, _real=real, **k: calls.append(1) or _real(*a, **k))
    back = pickle.loads(data)
    assert len(calls) == 1
    _assert_identical(back, _reference(samples))
    tensors = [v for v in back.values() if isinstance(v, torch.Tensor)]
    assert len(tensors) == 11 and len({v.untyped_storage().data_ptr() for v in tensors}) == 1
    assert all(v.is_shared() for v in tensors)
