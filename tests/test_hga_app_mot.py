"""HGA's inputs: NExT-QA's released ``app_mot`` features, and every input standardised.

From the release's features: a NExT-QA-layout file (``feat`` (N, 16,
4096), integer ids) written with h5py, imported with ``vqa-cache import``'s code, and trained for
one epoch with the text from another store; the motion half (``[2048:]``, as the release's
``sample_loader.py`` splits it) is found and standardised on its own.

Planted mutations (each made a test here fail):

1. ``motion_split`` returning 0 for a NExT-QA file -> ``test_hga_trains_from_imported_app_mot``
   fails [1 failed].
2. ``HGAModel._frames`` standardising the whole 4096-d vector (no split)
   -> ``test_frames_standardise_appearance_and_motion_apart`` fails [1 failed].
3. ``_frames`` splitting at ``k + 1`` -> the same test fails [1 failed].
4. ``input_norm`` ignored (raw inputs) -> the same test and the scale test fail [2 failed].
5. the question's sentence vector read raw (no ``_norm``)
   -> ``test_input_norm_makes_hga_blind_to_the_inputs_scale`` fails [1 failed].
"""

from __future__ import annotations

import sys
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from spec_factory import make_spec  # noqa: E402

from vqacache.cache_spec import open_store  # noqa: E402
from vqacache.cache_spec.hdf5 import import_file  # noqa: E402
from vqacache.heads.methods import get_method, method_args  # noqa: E402

D_APP = 2048


def _text_store(path: Path, splits: dict[str, list[str]]):
    """A store of dataset ``toy`` holding only question bundles (the text role)."""
    store = open_store(path, "a", spec=make_spec(patches=False, seed=5), dataset="toy")
    rng = np.random.default_rng(5)
    for split, vids in splits.items():
        for vid in vids:
            entries = [{"qid": f"{vid}_0", "question": "what?", "candidates": ["a", "b", "c", "d", "e"],
                        "answer": int(rng.integers(5)), "qtype": "x", "start": None, "end": None}]
            store.write_questions(split, vid, entries, {
                "text": rng.standard_normal((1, 8)), "text_tokens": rng.standard_normal((1, 3, 8)),
                "text_len": np.full(1, 3, np.int64), "cand": rng.standard_normal((1, 5, 8)),
                "cand_tokens": np.zeros((1, 5, 1, 8)), "cand_len": np.ones((1, 5), np.int64),
            })
    return store


def test_hga_trains_from_imported_app_mot(tmp_path):
    from vqacache.heads.train import TrainConfig, load_checkpoint, train

    splits = {"train": [str(v) for v in range(2400, 2404)], "val": ["2404", "2405"]}
    text = _text_store(tmp_path / "text.zarr", splits)
    ids = [int(v) for vids in splits.values() for v in vids]
    rng = np.random.default_rng(1)
    app = np.abs(rng.standard_normal((len(ids), 16, D_APP))).astype(np.float32)  # post-ReLU ResNet pooling
    mot = (0.05 * rng.standard_normal((len(ids), 16, D_APP))).astype(np.float32)  # another scale
    released = tmp_path / "app_mot_train.h5"
    with h5py.File(released, "w") as fd:
        fd.create_dataset("ids", data=np.array(ids, dtype=np.int64))
        fd.create_dataset("feat", data=np.concatenate([app, mot], -1))  # as the release writes it
    store, report = import_file(released, "nextqa", "toy", tmp_path / "cache")
    assert report.failed == [] and store.imported["layout"] == "nextqa"
    metrics = train(TrainConfig(method="hga", store=str(store.path), out=str(tmp_path / "run"), epochs=1,
                                batch_size=2, lr=1e-3, stores={"text": str(text.path)}, optimizer="adam",
                                weight_decay=0.0, warmup=0.0,
                                args={"num_frames": 16, "hga_hidden": 8, "fusion_rank": 4}))
    assert np.isfinite(metrics["train_loss"])
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert ckpt["model_args"]["motion_split"] == D_APP and ckpt["dims"]["cls_dim"] == 2 * D_APP


def test_frames_standardise_appearance_and_motion_apart():
    """Against an independent recomputation: each half over its own features."""
    args = method_args(get_method("hga"), {"num_frames": 3, "hga_hidden": 8, "fusion_rank": 4, "motion_split": 4})
    model = get_method("hga").build(args, {"cls_dim": 10, "text_dim": 5, "num_answers": 0})
    g = torch.Generator().manual_seed(0)
    cls = torch.cat([torch.rand(2, 3, 4, generator=g) * 9 + 3, torch.randn(2, 3, 6, generator=g) * 0.01], -1)
    app, mot = cls[..., :4], cls[..., 4:]
    want = torch.cat([(app - app.mean(-1, keepdim=True)) / torch.sqrt(app.var(-1, unbiased=False, keepdim=True) + 1e-5),
                      (mot - mot.mean(-1, keepdim=True)) / torch.sqrt(mot.var(-1, unbiased=False, keepdim=True) + 1e-5)],
                     -1)
    got = model._frames(cls)
    assert torch.allclose(got, want, atol=1e-5)
    assert not torch.allclose(F.layer_norm(cls, (10,)), want, atol=1e-2)  # one LayerNorm over both would differ


def test_input_norm_makes_hga_blind_to_the_inputs_scale():
    """Every input vector (frames, sentence, tokens, candidates) is standardised: scaling and
    shifting them all changes nothing; with ``input_norm=false`` it does."""
    dims = {"cls_dim": 6, "text_dim": 5, "num_answers": 0}
    g = torch.Generator().manual_seed(3)
    batch = {"cls": torch.randn(2, 4, 6, generator=g), "frame_mask": torch.ones(2, 4, dtype=torch.bool),
             "text": torch.randn(2, 5, generator=g), "text_tokens": torch.randn(2, 3, 7, generator=g),
             "text_token_mask": torch.ones(2, 3, dtype=torch.bool), "cand": torch.randn(2, 3, 5, generator=g),
             "cand_mask": torch.ones(2, 3, dtype=torch.bool)}
    scaled = {k: (v * 7.0 + 2.0 if v.is_floating_point() else v) for k, v in batch.items()}
    for norm in (True, False):
        args = method_args(get_method("hga"), {"num_frames": 4, "hga_hidden": 8, "fusion_rank": 4, "token_dim": 7,
                                               "input_norm": norm})
        torch.manual_seed(0)
        model = get_method("hga").build(args, dims).eval()
        with torch.no_grad():
            same = torch.allclose(model(batch)["logits"], model(scaled)["logits"], atol=1e-4)
        assert same == norm
