"""Stage two on small synthetic stores: dataset, methods, training, resume, CLI."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from vqacache.cache_spec import SpecMismatch, UnknownName
from vqacache.cli.train_head import app
from vqacache.heads.data import MissingTeacher, QADataset, collate, frame_indices
from vqacache.heads.methods import get_method, method_args
from vqacache.heads.synthetic import make_temporal_store
from vqacache.heads.train import TrainConfig, load_checkpoint, train

SMALL = {"num_frames": 8, "num_select": 2, "num_layers": 1, "num_heads": 2, "dim": 16}


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("heads")
    kw = dict(splits={"train": 6, "val": 2}, n_frames=10, dim=16, n_patches=2)
    with_teacher = make_temporal_store(root / "t.zarr", **kw)
    no_teacher = make_temporal_store(root / "n.zarr", teacher=False, **kw)
    other = make_temporal_store(root / "o.zarr", seed=1, **kw)
    return with_teacher.path, no_teacher.path, other.path


def test_frame_indices_uniform_and_segment():
    pts = np.arange(20) / 7.5
    assert frame_indices(pts, 100).tolist() == list(range(20))  # fewer frames than N: all, no repeats
    assert frame_indices(pts, 5).tolist() == [0, 5, 10, 14, 19]
    seg = frame_indices(pts, 100, start=1.0, end=2.0)
    assert ((pts[seg] >= 1.0) & (pts[seg] <= 2.0)).all() and len(seg) == 8
    assert frame_indices(pts, 4, start=1.01, end=1.02).tolist() == [8]  # none inside: nearest


def test_dataset_batches_lazy_and_checked(stores):
    path, bare, other = stores
    ds = QADataset(path, "train", num_frames=8, patch_frames="all")
    assert len(ds) == 12 and ds.multiple_choice
    batch = collate([ds[0], ds[3]])
    assert batch["cls"].shape == (2, 8, 16) and batch["frame_mask"].all()
    assert batch["patch"].shape == (2, 8, 2, 16) and batch["cand"].shape == (2, 4, 16)
    assert batch["imageqa"].shape == (2, 8, 4) and batch["has_imageqa"].all()
    assert torch.allclose(batch["imageqa"].sum(-1), torch.ones(2, 8), atol=1e-5)
    clone = pickle.loads(pickle.dumps(ds))  # what a DataLoader worker gets: reopens lazily
    assert clone._store is None and torch.equal(clone[3]["cls"], ds[3]["cls"])
    assert "imageqa" not in QADataset(bare, "train", num_frames=8)[0]
    uni = QADataset(path, "train", num_frames=8, patch_frames="uniform", num_patch_frames=2)
    assert uni[0]["patch"].shape == (2, 2, 16)
    with pytest.raises(SpecMismatch):
        QADataset(other, "train", expect_fingerprint=ds.fingerprint)


def test_registry_lists_valid_names():
    with pytest.raises(UnknownName, match="sparc, uniform, videodistill"):
        get_method("nope")
    with pytest.raises(UnknownName, match="num_select"):
        method_args(get_method("uniform"), {"bogus": 1})


@pytest.mark.parametrize("method,extra", [("uniform", {}), ("videodistill", {}), ("sparc", {"backbone": "uniform", "num_frames": 0})])
def test_methods_train_and_write_outputs(stores, tmp_path, method, extra):
    out = tmp_path / method
    m = train(TrainConfig(method=method, store=str(stores[0]), out=str(out), epochs=1, batch_size=4, lr=1e-3,
                          args={**SMALL, **extra}))
    assert np.isfinite(m["train_loss"]) and 0 <= m["val_acc"] <= 100
    preds = json.loads((out / "predictions" / "val.json").read_text())
    assert len(preds) == 4 and all(set(v) == {"prediction", "answer"} for v in preds.values())
    ckpt = load_checkpoint(out / "checkpoints" / "best.pt")
    for key in ("model_args", "store_fingerprint", "optimizer", "scheduler", "rng", "model"):
        assert key in ckpt


def test_sparc_needs_teacher(stores, tmp_path):
    with pytest.raises(MissingTeacher):
        train(TrainConfig(method="sparc", store=str(stores[1]), out=str(tmp_path / "r"), epochs=1, args=SMALL))


def test_resume_reproduces_uninterrupted_run(stores, tmp_path):
    cfg = dict(method="sparc", store=str(stores[0]), batch_size=4, lr=1e-3, args={**SMALL, "backbone": "videodistill", "num_frames": 0})
    full = train(TrainConfig(out=str(tmp_path / "full"), epochs=2, **cfg))
    train(TrainConfig(out=str(tmp_path / "cut"), epochs=2, stop_after=1, **cfg))  # killed after epoch 0
    with pytest.raises(SpecMismatch):
        train(TrainConfig(out=str(tmp_path / "cut"), epochs=2, resume=True, **{**cfg, "store": str(stores[2])}))
    resumed = train(TrainConfig(out=str(tmp_path / "cut"), epochs=2, resume=True, **cfg))
    assert resumed["losses"] == full["losses"]
    lines = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [0, 1]


def test_cli_one_line_errors(stores, tmp_path):
    runner = CliRunner()
    bad = runner.invoke(app, ["--method", "nope", "--store", str(stores[0]), "--out", str(tmp_path / "x")])
    from vqacache.heads.methods import METHODS

    assert bad.exit_code == 2 and f"valid: {', '.join(sorted(METHODS))}" in bad.output
    ok = runner.invoke(app, ["--method", "uniform", "--store", str(stores[0]), "--out", str(tmp_path / "u"),
                             "--epochs", "1", "--num-frames", "8", "--num-select", "2", "--num-layers", "1",
                             "--num-heads", "2", "--dim", "16"])
    assert ok.exit_code == 0, ok.output
    again = runner.invoke(app, ["--method", "uniform", "--store", str(stores[0]), "--out", str(tmp_path / "u")])
    assert again.exit_code == 2 and "--resume" in again.output


def test_optimizer_from_method_optim(stores, tmp_path, monkeypatch):
    """``method.optim["optimizer"]`` picks the optimiser (adamw default); unknown names list the valid ones."""
    import dataclasses

    from vqacache.cache_spec.errors import UsageError
    from vqacache.heads import recipe
    from vqacache.heads.methods import METHODS

    base = METHODS["uniform"]
    seen = []
    real = recipe.make_optimizer
    monkeypatch.setattr(recipe, "make_optimizer", lambda name, *a, **k: seen.append(name) or real(name, *a, **k))
    cfg = dict(store=str(stores[0]), epochs=1, batch_size=4, lr=1e-3, args=SMALL, max_steps_per_epoch=1)
    train(TrainConfig(method="uniform", out=str(tmp_path / "w"), **cfg))
    monkeypatch.setitem(METHODS, "uniform", dataclasses.replace(base, optim={**base.optim, "optimizer": "adam"}))
    train(TrainConfig(method="uniform", out=str(tmp_path / "a"), **cfg))
    assert seen == ["adamw", "adam"]
    monkeypatch.setitem(METHODS, "uniform", dataclasses.replace(base, optim={**base.optim, "optimizer": "sgd"}))
    with pytest.raises(UsageError, match="unknown optimizer 'sgd'.*valid: adam, adamw"):
        train(TrainConfig(method="uniform", out=str(tmp_path / "s"), **cfg))
