"""The image-QA teacher on a fresh offline machine, its leases, and user text through rich.

* Random teacher weights without ``--imageqa-tokenizer`` get a WordPiece tokenizer built from
  the dataset's text, deterministic across processes and recorded in the teacher's spec; real
  weights never get one; every ``--imageqa*`` flag is checked before any video is touched.
* The image-QA pass keeps its leases alive while it works and re-checks them before
  publishing: a video whose lease another run took over is dropped, counted, not written.
* Video ids and messages with rich markup in them print literally.

Planted mistakes, each checked to make a test here fail:

1. ``dataset_tokenizer``: words sorted by count only (``key=lambda w: -counts[w]``, no tie by
   the word) -> the hand-computed vocabulary and the shuffled-order build differ
   (``test_built_vocabulary_by_hand_and_across_processes``).
2. ``options.check_teacher_options``: the tokenizer built whenever no ``--imageqa-tokenizer``
   is given (``if True:`` for ``if random:``) -> real weights without a tokenizer get the made-up
   one (``test_teacher_flag_errors_come_before_any_video`` [weights-without-tokenizer]).
3. ``task.run_imageqa``: the ``leases[video_id].renew()`` check before ``write_imageqa`` dropped
   -> the video another run took over is written (``test_a_lease_taken_over_is_dropped_not_written``).
4. ``task.run_imageqa``: no heartbeat running (``with heartbeat:`` -> ``if True:``) -> the slow
   video's lease expires and it is dropped (``test_the_heartbeat_keeps_a_slow_videos_lease``).
5. ``cli._common.RichReporter.advance``: ``escape`` dropped -> ``[bold]a`` loses its brackets and
   ``clip[/x]`` raises MarkupError (``test_ids_with_markup_print_literally``).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from vqacache.cache_spec import open_store
from vqacache.cache_spec.lease import lease_path, try_claim
from test_imageqa import config
from vqacache.featurize.imageqa import blip
from vqacache.featurize.imageqa.dataset_tokenizer import SPECIALS, build_dataset_tokenizer, tokens_sha256
from vqacache.featurize.imageqa.task import _VideoPlan
from vqacache.featurize.pipeline import featurize




def cli_args(cache, demo_root, tiny_clip, *extra) -> list[str]:
    return ["--dataset", "demo", "--data-root", str(demo_root), "--encoder", tiny_clip, "--weights", "random",
            "--cache-root", str(cache), "--split", "val", "--batch-size", "8", "--workers", "0", *extra]


# -- the tokenizer built from the dataset ---------------------------------------------------


def test_built_vocabulary_by_hand_and_across_processes(demo_root):
    built = build_dataset_tokenizer(["Red ball?", "red", "the BALL", "a cat"])
    # by hand: characters a b c d e h l r t ? sorted, their ## forms, then words by count then word
    chars = sorted("abcdehlrt?")
    words = ["ball", "red", "cat", "the"]  # ball 2, red 2, then cat 1, the 1 ("a", "?" are characters)
    assert list(built.tokens) == [*SPECIALS, *chars, *(f"##{c}" for c in chars), *words]
    assert built.tokens[100:104] == ("[UNK]", "[CLS]", "[SEP]", "[MASK]") and built.tokens[0] == "[PAD]"
    assert built.sha256 == tokens_sha256(built.tokens)
    tok = built.load()
    ids = tok("Red BALL?")["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == ["[CLS]", "red", "ball", "?", "[SEP]"]
    assert tok("tab")["input_ids"][1:-1] == [built.tokens.index("t"), built.tokens.index("##a"), built.tokens.index("##b")]
    # the same text in another order, and in fresh processes with other hash seeds: the same vocabulary
    assert build_dataset_tokenizer(["a cat", "the BALL", "red", "Red ball?"]) == built
    code = ("from vqacache.featurize.datasets import get_dataset\n"
            "from vqacache.featurize.imageqa.dataset_tokenizer import build_dataset_tokenizer, dataset_texts\n"
            f"print(build_dataset_tokenizer(dataset_texts(get_dataset('demo', {str(demo_root)!r}))).sha256)\n")
    shas = {subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout.strip() for seed in ("1", "2")}
    assert len(shas) == 1 and len(next(iter(shas))) == 64


def _tiny_random_blip_config():
    """BlipConfig() with BERT's 30524-token text vocabulary and ids (as random weights use) but
    narrow and shallow, so the real BLIP teacher with random weights runs in seconds."""
    from transformers import BlipConfig

    return BlipConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=64, patch_size=16),
        text_config=dict(hidden_size=32, encoder_hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2),
    )


def test_random_blip_weights_get_the_dataset_tokenizer_recorded(tmp_path, demo_root, tiny_clip, monkeypatch):
    monkeypatch.setattr(blip, "default_config", _tiny_random_blip_config)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cli = CliRunner().invoke(_featurize_app(), cli_args(tmp_path, demo_root, tiny_clip, "--imageqa", "blip",
                                                        "--imageqa-weights", "random", "--imageqa-frames", "2"))
    assert cli.exit_code == 0, cli.output
    lines = [line for line in cli.output.splitlines() if "WordPiece tokenizer was built from the dataset" in line]
    assert len(lines) == 1 and "recorded in the teacher's spec" in lines[0], cli.output
    from vqacache.featurize.datasets import get_dataset
    from vqacache.featurize.imageqa.dataset_tokenizer import dataset_texts

    expected = build_dataset_tokenizer(dataset_texts(get_dataset("demo", demo_root)))
    store = open_store(next(tmp_path.glob("demo/*.zarr")))
    spec = store.teacher_spec()
    tokenizer = spec.model["tokenizer"]
    assert tokenizer["identity"] == "wordpiece-from-dataset" and tokenizer["vocab_sha256"] == expected.sha256
    assert tokenizer["vocab_size"] == len(expected) and spec.model["weights"]["identity"] == "random:0"
    q = store.read_question(store.questions("val")[0])
    assert q.imageqa.shape[0] == 2 and np.allclose(q.imageqa.sum(axis=1), 1.0, atol=1e-5)
    # a second run builds the same tokenizer: same teacher, nothing to redo (another would be refused)
    again = CliRunner().invoke(_featurize_app(), cli_args(tmp_path, demo_root, tiny_clip, "--imageqa", "blip",
                                                          "--imageqa-weights", "random", "--imageqa-frames", "2"))
    assert again.exit_code == 0 and "image-QA:" not in again.output, again.output
    assert open_store(store.path).teacher_spec().fingerprint() == spec.fingerprint()


def _featurize_app():
    from vqacache.cli.featurize import app

    return app


FLAG_CASES = {
    "unknown-teacher": (["--imageqa", "blipp"], "--imageqa: unknown image-QA teacher 'blipp'"),
    "bad-random": (["--imageqa", "blip", "--imageqa-weights", "random:x"], "--imageqa-weights 'random:x'"),
    "missing-weights": (["--imageqa", "blip", "--imageqa-weights", "{tmp}/nope"], "--imageqa-weights {tmp}/nope"),
    "albef-no-weights": (["--imageqa", "albef"], "--imageqa-weights"),
    "score": (["--imageqa", "blip", "--imageqa-score", "albef"], "--imageqa-score 'albef'"),
    "missing-tokenizer": (["--imageqa", "blip", "--imageqa-weights", "random", "--imageqa-tokenizer", "{tmp}/nope"],
                          "--imageqa-tokenizer {tmp}/nope"),
    "empty-tokenizer-folder": (["--imageqa", "albef", "--imageqa-weights", "random", "--imageqa-tokenizer", "{tmp}/empty"],
                               "--imageqa-tokenizer {tmp}/empty"),
    "weights-without-tokenizer": (["--imageqa", "blip", "--imageqa-weights", "{tmp}/blip"],
                                  "--imageqa-tokenizer not given, and --imageqa-weights {tmp}/blip has no tokenizer"),
}


@pytest.mark.parametrize("case", list(FLAG_CASES))
def test_teacher_flag_errors_come_before_any_video(case, tmp_path, demo_root, tiny_clip, monkeypatch):
    """One line naming the flag, exit 2, and neither the videos nor the cache were touched:
    checking the videos on disk and the run itself fail the test if reached."""
    import vqacache.featurize.pipeline as pipeline

    def touched(*args, **kwargs):
        raise AssertionError("a video was touched before the teacher flags were checked")

    monkeypatch.setattr(pipeline, "check_videos", touched)
    monkeypatch.setattr(pipeline, "run_passes", touched)
    (tmp_path / "empty").mkdir()
    if case == "weights-without-tokenizer":
        from tiny_blip import write_tiny_blip_vqa

        write_tiny_blip_vqa(tmp_path / "blip", image_size=64, tokenizer=False)
    flags, expected = FLAG_CASES[case]
    cache = tmp_path / "cache"
    cli = CliRunner().invoke(_featurize_app(), cli_args(cache, demo_root, tiny_clip,
                                                        *[f.format(tmp=tmp_path) for f in flags]))
    assert cli.exit_code == 2, cli.output
    assert cli.output.strip().splitlines() == [cli.output.strip()] and cli.output.startswith("error: "), cli.output
    assert expected.format(tmp=tmp_path) in cli.output and "Traceback" not in cli.output
    assert not cache.exists()


# -- leases -------------------------------------------------------------------------------------


def test_a_lease_taken_over_is_dropped_not_written(tmp_path, demo_root, tiny_clip, fake_teacher, monkeypatch):
    """While the first video is being scored its lease expires and another run takes it: this run
    must not write that video, must leave the other run's lease alone, and goes on."""
    score = _VideoPlan.score
    stolen = []

    def score_then_lose_the_lease(self, *args, **kwargs):
        out = score(self, *args, **kwargs)
        if not stolen:
            video_id = self.rows[0].video_id
            path = next(tmp_path.glob("demo/*.zarr"))
            lease_path(path, video_id, "imageqa").unlink()  # as if it had expired and been stolen
            assert try_claim(path, video_id, "other-run", 600, kind="imageqa") is not None
            stolen.append((path, video_id))
        return out

    monkeypatch.setattr(_VideoPlan, "score", score_then_lose_the_lease)
    result = featurize(config(tmp_path, demo_root, tiny_clip, imageqa=fake_teacher, imageqa_frames=3))
    (path, video_id), = stolen
    assert result.imageqa_lost == 1 and result.imageqa_done == 3 and not result.imageqa_failures
    assert result.exit_code == 0 and "1 left to another run" in result.summary_line()
    store = open_store(path)
    teacher_fp = store.teacher_spec().fingerprint()
    assert not store.has_imageqa("val", video_id, teacher_fp)
    others = [v for v in {store.read_question(q).video_id for q in store.questions("val")} if v != video_id]
    assert len(others) == 3 and all(store.has_imageqa("val", v, teacher_fp) for v in others)
    import json

    assert json.loads(lease_path(path, video_id, "imageqa").read_text())["owner"] == "other-run"


def test_the_heartbeat_keeps_a_slow_videos_lease(tmp_path, demo_root, tiny_clip, fake_teacher, monkeypatch):
    """A video scored for longer than the lease's ttl is still published: the heartbeat renewed it
    (without one, the check before publishing finds the lease expired and drops the video)."""
    score = _VideoPlan.score
    slow = []

    def slow_score(self, *args, **kwargs):
        if not slow:
            slow.append(self.rows[0].video_id)
            time.sleep(5.0)  # well past the ttl
        return score(self, *args, **kwargs)

    # the features pass first, with the default ttl; then the image-QA pass with a 3 s ttl
    featurize(config(tmp_path, demo_root, tiny_clip))
    monkeypatch.setattr(_VideoPlan, "score", slow_score)
    result = featurize(config(tmp_path, demo_root, tiny_clip, imageqa=fake_teacher, imageqa_frames=3,
                              lease_ttl_s=3))
    assert slow and result.imageqa_lost == 0 and result.imageqa_done == 4, result.summary_line()


# -- rich markup ----------------------------------------------------------------------------------


def test_ids_with_markup_print_literally():
    from rich.console import Console

    from vqacache.cli._common import RichReporter

    out = io.StringIO()
    reporter = RichReporter(Console(file=out, width=300, force_terminal=False, color_system=None))
    reporter.start(2, "folder / x[/y]")
    reporter.advance(1, 0, {"clip[/x]": "decode-error: bad [red]frame", "[bold]a": "timeout [/]"})
    reporter.message("[bold]note[/x] for clip[/x]")
    reporter.finish()
    text = out.getvalue()
    assert "clip[/x]: decode-error: bad [red]frame" in text and "[bold]a: timeout [/]" in text
    assert "[bold]note[/x] for clip[/x]" in text


def test_featurize_cli_prints_ids_with_markup_literally(tmp_path, tiny_clip):
    """Videos named ``clip[/x]`` and ``[bold]a`` (a folder dataset; ids are relative paths) that
    cannot be decoded: the failures, printed as they happen and at the end, show the ids as they are."""
    (tmp_path / "videos" / "clip[").mkdir(parents=True)
    (tmp_path / "videos" / "clip[" / "x].mp4").write_bytes(b"not a video")
    (tmp_path / "videos" / "[bold]a.mp4").write_bytes(b"not a video either")
    cli = CliRunner().invoke(_featurize_app(), ["--dataset", "folder", "--data-root", str(tmp_path / "videos"),
                                                "--encoder", tiny_clip, "--weights", "random", "--cache-root",
                                                str(tmp_path / "cache"), "--workers", "0", "--decode-timeout", "60"])
    assert cli.exit_code == 3, cli.output
    assert "failed: clip[/x]: " in cli.output and "failed: [bold]a: " in cli.output, cli.output
    assert "MarkupError" not in cli.output


def test_usage_errors_print_user_text_literally(tmp_path):
    from vqacache.cli.cache import app as cache_app

    missing = tmp_path / "[bold]x[/y]"
    cli = CliRunner().invoke(cache_app, ["ls", "--cache-root", str(missing)])
    assert cli.exit_code == 2 and f"--cache-root {missing} is not a directory" in cli.output, cli.output
