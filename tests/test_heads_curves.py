"""The run's curves.png: written after every epoch, a valid PNG, from metrics.jsonl.

Mutations tried (each fails a test here): the moving average without its bias correction
(``test_smooth_and_step_losses_by_hand``); per-step losses placed one step early (both
by-hand tests); the chance line drawn at chance / 100 (``test_curves_mark_chance_and_plot_every_step``).
"""

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


def test_smooth_and_step_losses_by_hand():
    """EMA recomputed by hand; steps placed by the rows' ``step`` (or by counting losses)."""
    from vqacache.heads.curves import smooth, step_losses

    b = 0.5
    m1 = 0.5 * 4.0
    m2 = b * m1 + 0.5 * 2.0
    m3 = b * m2 + 0.5 * 0.0
    assert smooth([4.0, 2.0, 0.0], b) == pytest.approx([m1 / 0.5, m2 / 0.75, m3 / 0.875])
    assert smooth([3.0, 1.0]) == [3.0, 1.0]  # 10 steps or fewer: not smoothed
    rows = [{"epoch": 0, "losses": [3.0, 2.0], "step": 2}, {"epoch": 1, "losses": [1.0]}]
    assert step_losses(rows) == ([1, 2, 3], [3.0, 2.0, 1.0])


def test_curves_mark_chance_and_plot_every_step():
    from vqacache.heads.curves import draw_curves

    rows = [{"epoch": e, "losses": [1.0, 0.9, 0.8], "step": 3 * (e + 1), "train_loss": 0.9, "val_acc": 30.0 + e,
             "chance_acc": 20.0, "lr": 1e-4} for e in range(2)]
    ax_loss, ax_acc, _ = draw_curves(rows).axes
    raw = ax_loss.lines[0]
    assert list(raw.get_xdata()) == [1, 2, 3, 4, 5, 6] and list(raw.get_ydata()) == [1.0, 0.9, 0.8] * 2
    assert any(list(line.get_ydata()) == [20.0, 20.0] and "chance" in line.get_label() for line in ax_acc.lines)
    assert list(ax_acc.lines[0].get_xdata()) == [3, 6]  # val accuracy at each epoch's last step
