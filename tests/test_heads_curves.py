"""The run's curves.png: written after every epoch, a valid PNG, from metrics.jsonl."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from vqacache.heads.curves import loss_terms, read_metrics, write_curves
from vqacache.heads.synthetic import make_temporal_store
from vqacache.heads.train import TrainConfig, train

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SMALL = {"num_frames": 8, "num_select": 2, "num_layers": 1, "num_heads": 2, "dim": 16}


def assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 0 and im.size[1] > 0


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_temporal_store(tmp_path_factory.mktemp("curves") / "s.zarr", splits={"train": 4, "val": 2},
                               n_frames=10, dim=16, n_patches=2).path


def test_training_writes_curves_after_every_epoch(store, tmp_path):
    out = tmp_path / "run"
    cfg = dict(method="sparc", store=str(store), out=str(out), epochs=2, batch_size=4, lr=1e-3,
               args={**SMALL, "backbone": "uniform", "num_frames": 0})
    train(TrainConfig(stop_after=1, **cfg))  # one epoch, then "killed"
    png = out / "curves.png"
    assert_png(png)
    first = png.stat().st_mtime_ns
    train(TrainConfig(resume=True, **cfg))
    assert_png(png)
    assert png.stat().st_mtime_ns >= first
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [0, 1]
    assert all(isinstance(r["val_loss"], float) and r["val_loss"] > 0 for r in rows)
    assert loss_terms(rows) == ["train_l_c", "train_l_g", "train_l_s"]  # sparc's terms are drawn too
    assert not list(out.glob(".curves.png.tmp-*"))


def test_write_curves_from_records_without_val_loss(tmp_path):
    rows = [{"epoch": e, "train_loss": 1.0 / (e + 1), "val_loss": None, "val_acc": 40.0 + e, "lr": 1e-4}
            for e in range(3)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")
    assert_png(write_curves(tmp_path / "metrics.jsonl", tmp_path / "sub" / "c.png", title="t"))
    assert loss_terms(rows) == []
