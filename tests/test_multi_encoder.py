"""``--encoder a,b``: every video decoded once and fed to each encoder, one store per encoder."""

from __future__ import annotations

import numpy as np
import pytest

from vqacache.cache_spec import UsageError, open_store
from vqacache.featurize import shard
from vqacache.featurize.pipeline import FeaturizeConfig, featurize

ARRAYS = ("cls", "cls_hidden", "patch", "pts", "src_index", "is_repeat")


def config(cache, demo_root, encoder, **kw) -> FeaturizeConfig:
    base = dict(dataset="demo", data_root=demo_root, encoder=encoder, weights="random", cache_root=cache,
                splits=("val",), batch_size=8, workers=0)
    base.update(kw)
    return FeaturizeConfig(**base)


def chunks_decoded() -> int:
    return sum(pool.stats.chunks for pool in shard._POOLS.values())


def test_two_encoders_decode_once_and_equal_their_single_runs(tmp_path, demo_root, tiny_clip):
    second = f"{tiny_clip}-p32"
    alone = featurize(config(tmp_path / "alone", demo_root, second))
    before = chunks_decoded()
    both = featurize(config(tmp_path / "both", demo_root, f"{tiny_clip},{second}"))
    decoded_for_both = chunks_decoded() - before
    assert both.exit_code == 0 and both.done == 4 and len(both.store_paths) == 2
    assert both.store_path == both.store_paths[0] and both.store_paths[1].name == alone.store_path.name
    # as many chunks as one encoder alone needs: each video was decoded once for both
    again = chunks_decoded()
    featurize(config(tmp_path / "alone2", demo_root, second))
    assert decoded_for_both == chunks_decoded() - again > 0
    a, b = open_store(both.store_paths[1]), open_store(alone.store_path)
    assert a.fingerprint == b.fingerprint and a.complete_videos() == b.complete_videos()
    for video_id in a.complete_videos():  # the same batches: bit for bit
        va, vb = a.read_video(video_id), b.read_video(video_id)
        for name in ARRAYS:
            np.testing.assert_array_equal(va[name], vb[name], err_msg=f"{video_id}/{name}")
    first = open_store(both.store_paths[0])
    assert first.spec.encoder == "open_clip-vqacache-tiny" and len(first.complete_videos()) == 4
    assert first.questions("val") and a.questions("val") == first.questions("val")
    # a rerun finds both stores complete; a store missing videos gets only those
    assert featurize(config(tmp_path / "both", demo_root, f"{tiny_clip},{second}")).skipped == 4


def test_a_rerun_fills_only_the_store_that_lacks_videos(tmp_path, demo_root, tiny_clip):
    second = f"{tiny_clip}-p32"
    featurize(config(tmp_path, demo_root, tiny_clip))
    result = featurize(config(tmp_path, demo_root, f"{tiny_clip},{second}"))
    assert result.done == 4 and result.skipped == 0
    logs = [open_store(p).run_logs()[-1] for p in result.store_paths]
    assert [log["videos_written_here"] for log in logs] == [0, 4] and logs[0]["run_id"] == logs[1]["run_id"]
    assert len(open_store(result.store_paths[0]).run_logs()) == 2


@pytest.mark.parametrize(("value", "message"), [(" , ", "at least one"), ("a,a", "twice")])
def test_encoder_list_errors(tmp_path, demo_root, value, message):
    with pytest.raises(UsageError, match=message):
        featurize(config(tmp_path, demo_root, value))
