"""Loading a file never runs code: checkpoints are tensors and plain data, read with
``weights_only=True``; crafted pickles given to ``--resume``, ``vqa-eval`` or
:func:`load_checkpoint` are refused with one line and run nothing.

The crafted files' ``__reduce__`` calls ``os.system("touch MARKER")``: each test checks the
marker was not created. (They are only ever written here, never unpickled by the tests.)

Planted mistakes these tests catch (each was planted and a test failed):

1. ``load_checkpoint`` back to ``torch.load(..., weights_only=False)``: the payload runs, the
   marker appears -> every refusal test fails.
2. ``load_checkpoint`` without its ``try/except`` turning the unpickler's error into a
   :class:`UsageError`: a multi-line ``UnpicklingError`` escapes (a traceback in the CLI, exit 1)
   -> the one-line and exit-code assertions fail.
3. ``_rng_state`` storing ``np.random.get_state()`` as it is (a numpy array, the old format): the
   checkpoint is no longer plain data -> :func:`check_plain` refuses it at save time and the
   round-trip test fails (without ``check_plain`` the ``weights_only`` load would refuse it on
   ``--resume``).
"""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from vqacache.cache_spec import UsageError
from vqacache.cli.eval import app as eval_app
from vqacache.cli.train_head import app as train_app
from vqacache.heads.synthetic import make_temporal_store
from vqacache.heads.train import TrainConfig, check_plain, load_checkpoint, train

SMALL = {"num_frames": 8, "num_select": 2, "num_layers": 1, "num_heads": 2, "dim": 16}
SMALL_CLI = ["--num-frames", "8", "--num-select", "2", "--num-layers", "1", "--num-heads", "2", "--dim", "16"]


class Payload:
    """Unpickling this calls ``os.system("touch <marker>")``."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _evil_files(tmp_path):
    """(marker, {kind: path}): a plain pickle and a torch zip checkpoint carrying the payload."""
    marker = tmp_path / "PWNED"
    plain = tmp_path / "plain.pt"
    plain.write_bytes(pickle.dumps({"format": 2, "model": Payload(str(marker))}))
    zipped = tmp_path / "zipped.pt"
    torch.save({"format": 2, "model": {"w": torch.zeros(2)}, "rng": Payload(str(marker))}, zipped)
    return marker, {"plain": plain, "zipped": zipped}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("safe")
    return make_temporal_store(root / "t.zarr", splits={"train": 4, "val": 2}, n_frames=10, dim=16, n_patches=2).path


@pytest.mark.parametrize("kind", ["plain", "zipped"])
def test_load_checkpoint_refuses_a_crafted_pickle_and_runs_nothing(tmp_path, kind):
    marker, files = _evil_files(tmp_path)
    with pytest.raises(UsageError) as info:
        load_checkpoint(files[kind])
    message = str(info.value)
    assert "\n" not in message and "loads safely" in message and str(files[kind]) in message
    assert not marker.exists()


def test_an_old_checkpoint_with_numpy_objects_is_refused_in_one_line(tmp_path):
    """Format 1 pickled numpy's RNG state: not plain data, so it is refused, not unpickled."""
    path = tmp_path / "old.pt"
    torch.save({"format": 1, "rng": {"numpy": np.random.get_state()}}, path)
    with pytest.raises(UsageError, match="loads safely") as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value)


def test_resume_with_a_crafted_last_checkpoint_is_a_one_line_error(tmp_path, store):
    marker, files = _evil_files(tmp_path)
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "last.pt").write_bytes(files["zipped"].read_bytes())
    result = CliRunner().invoke(train_app, ["--method", "uniform", "--store", str(store), "--out", str(out),
                                            "--epochs", "1", "--resume", *SMALL_CLI])
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in result.output
    assert not marker.exists()


def test_vqa_eval_with_a_pickle_as_predictions_is_a_one_line_error(tmp_path):
    marker, files = _evil_files(tmp_path)
    (tmp_path / "val.csv").write_text("video,qid,type,answer\nv1,0,CW,1\n")
    result = CliRunner().invoke(eval_app, ["--annotations", str(tmp_path), "--predictions", str(files["plain"])])
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in result.output
    assert not marker.exists()


def test_checkpoints_are_plain_data_and_resume_loads_them_safely(tmp_path, store):
    cfg = dict(method="uniform", store=str(store), batch_size=4, lr=1e-3, args=SMALL)
    train(TrainConfig(out=str(tmp_path / "r"), epochs=2, stop_after=1, **cfg))
    path = tmp_path / "r" / "checkpoints" / "last.pt"
    raw = torch.load(path, map_location="cpu", weights_only=True)  # what load_checkpoint does
    check_plain(raw)
    assert isinstance(raw["rng"]["numpy"]["keys"], torch.Tensor) and raw["rng"]["numpy"]["keys"].shape == (624,)
    assert isinstance(raw["rng"]["python"]["state"], torch.Tensor)
    resumed = train(TrainConfig(out=str(tmp_path / "r"), epochs=2, resume=True, **cfg))
    assert resumed["epoch"] == 1


def test_check_plain_refuses_objects_anywhere_in_the_tree():
    check_plain({"a": [1, 2.0, "x", None, True, (torch.zeros(1),)], 3: {"b": torch.ones(2)}})
    bad_trees = ({"a": [np.zeros(2)]}, {"a": (1, Payload("x"))}, {("tuple", "key"): 1},
                 {"p": torch.nn.Parameter(torch.zeros(1))})
    for bad in bad_trees:
        with pytest.raises(TypeError):
            check_plain(bad)
