"""The benchmarks' measuring functions, on one real video with the tiny model (figures aside)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def test_decode_preprocess_and_bare_encode(shared_videos: Path, tiny_clip: str, tmp_path: Path):
    from featurize_cpu import bare_encode_seconds, decode_and_preprocess, gather_videos

    from vqacache.featurize.decode import decode_at_fps
    from vqacache.featurize.encoders import get_encoder

    encoder = get_encoder(tiny_clip, "random")
    video = sorted(shared_videos.iterdir())[0]
    decode_s, n_frames, batch = decode_and_preprocess([video], encoder)
    decoded = decode_at_fps(video)
    assert n_frames == len(decoded.frames) and decode_s > 0
    assert batch.shape == (int((~decoded.is_repeat).sum()), 3, 224, 224)
    assert bare_encode_seconds(encoder, batch, 8) > 0

    folder = gather_videos(tmp_path, repeat=2)  # demo val clips + shared videos, twice each
    names = sorted(p.name for p in folder.iterdir())
    assert len(names) == 2 * (4 + len(list(shared_videos.iterdir())))
    assert names[0].startswith("000_") and all(p.resolve().is_file() for p in folder.iterdir())

