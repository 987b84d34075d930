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


def test_a_vision_only_encoder_stores_questions_without_text(tmp_path, demo_root, tiny_clip):
    """vitg has no text tower: its bundles hold the questions only, and stage two takes the
    text from a store that has it (--store text=...), refusing the vitg store for it."""
    from tiny_blip import write_tiny_blip2

    from vqacache.heads.data import QADataset

    weights = write_tiny_blip2(tmp_path / "blip2")
    result = featurize(config(tmp_path / "cache", demo_root, "vitg", weights=str(weights)))
    assert result.exit_code == 0 and result.done == 4
    vitg = open_store(result.store_path)
    assert vitg.spec.outputs.text is None
    q = vitg.read_question(vitg.questions("val")[0])
    assert q.text is None and q.text_tokens is None and q.cand is None and len(q.candidates) == 5
    clip = featurize(config(tmp_path / "cache", demo_root, tiny_clip))
    with pytest.raises(UsageError, match="holds no text features .* --store text=PATH"):
        QADataset(vitg.path, "val", num_frames=4)
    ds = QADataset(vitg.path, "val", num_frames=4, roles={"text": clip.store_path})
    sample = ds[0]
    assert sample["cls"].shape == (4, vitg.read_video(sample["video_id"]).cls.shape[1])  # vitg frames
    np.testing.assert_array_equal(sample["text"].numpy(), open_store(clip.store_path).read_question(sample["qid"]).text.astype(np.float32))
