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



def test_vlap_diagnostic_checkpoint_loads_through_the_folder_path(tmp_path: Path):
    """The VLAP diagnostic's stand-in checkpoint: a save_pretrained InstructBLIP folder that
    ``--weights FOLDER`` loads (its tokenizers, its vision LayerNorm applied exactly to the
    store's recorded gamma = 1 / beta = 0 tokens) and one epoch trains from; key frames carry
    the marker and the shift, the options are every concept in order."""
    import numpy as np
    import torch
    from vlap_diagnostic import ClipConfig, World, make_clip, make_vlap_store, pretrain_instructblip

    from vqacache.heads.train import TrainConfig, train

    cfg = ClipConfig(n_frames=8)
    world = World.make(cfg, 0)
    clip = make_clip(np.random.default_rng(1), world, cfg, "v")
    for m, entry in enumerate(clip.entries):
        key = entry["key_frames"]
        others = [t for t in range(cfg.n_frames) if t not in {k for e in clip.entries for k in e["key_frames"]}]
        assert 1 <= len(key) <= 2 and entry["candidates"] == [f"concept {o}" for o in range(cfg.n_concepts)]
        cls = clip.tokens[:, 0] - cfg.key_shift * np.isin(np.arange(cfg.n_frames), key)[:, None]
        assert all(float(cls[k] @ world.marker_vec[m]) > 0.5 for k in key)  # unit marker + noise 0.3
        assert clip.tokens[key].mean() - clip.tokens[others].mean() > 0.5 * cfg.key_shift
    store, weights = tmp_path / "s.zarr", tmp_path / "ib"
    make_vlap_store(store, {"train": 4, "test": 2}, cfg)
    acc = pretrain_instructblip(weights, cfg, steps=1, lr=1e-3, seed=0)
    assert set(acc) == {"pretrained_acc_1_frames", "pretrained_acc_4_frames"}
    assert (weights / "config.json").is_file() and (weights / "qformer_tokenizer").is_dir()
    torch.set_num_threads(1)
    m = train(TrainConfig(method="vlap", store=str(store), out=str(tmp_path / "run"), epochs=1, batch_size=4, lr=1e-4,
                          val_split="test", args={"weights": str(weights), "size": "checkpoint", "num_frames": 8,
                                                  "num_select": 2, "recipe": "vlap"}))
    assert 0.0 <= m["val_acc"] <= 100.0 and np.isfinite(m["train_loss"])
