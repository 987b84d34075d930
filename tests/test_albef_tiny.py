"""The ``albef-tiny`` architecture end to end on the command line: a registered encoder name with
its own character tokenizer and a recorded config, and ``vqa-train-teacher`` picking the
architecture up from the token store's spec, recording it in the checkpoint (which
``build_albef_teacher`` then builds without being told) and decoding nothing.

Planted mutations (each made a test here fail):

1. ``store_architecture`` ignoring the store's spec (always ``albef-vqa``)
   -> ``test_train_teacher_cli_on_an_albef_tiny_store`` fails [1 failed].
2. ``checkpoint_architecture`` returning None -> the same test fails at the rebuild without
   ``model_name`` [1 failed].
3. ``OWN_TOKENIZERS`` empty (bert-base-uncased asked for, not cached here)
   -> the encoder test and the CLI test fail [2 failed].
4. ``ALBEF_TINY`` with ``vocab_size`` 200 (smaller than the character vocabulary)
   -> ``test_character_tokenizer_fits_the_tiny_table`` fails [1 failed].
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from vqacache.cache_spec import SamplingSpec, open_store
from vqacache.cli.train_teacher import app
from vqacache.featurize.encoders import get_encoder, resolve_name
from vqacache.featurize.encoders.albef_model import ALBEF_TINY, ALBEF_VQA
from vqacache.featurize.encoders.albef_tokenizer import character_tokenizer, character_vocab
from vqacache.featurize.imageqa.albef import build_albef_teacher

QUESTIONS = [("What colour is the shape at the start?", ["red", "blue", "green"], 1),
             ("How many times does it bounce?", ["one", "two"], 0)]
N_FRAMES = 4


def test_character_tokenizer_fits_the_tiny_table():
    tok = character_tokenizer()
    vocab = character_vocab()
    assert len(tok) == len(vocab) == 240 <= ALBEF_TINY.vocab_size
    ids = tok("what colour is it? 3 times")["input_ids"]
    assert tok.unk_token_id not in ids and tok.convert_ids_to_tokens(ids[1:5]) == ["w", "##h", "##a", "##t"]
    assert (tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id) == (0, 100, 101, 102)


@pytest.fixture(scope="module")
def encoder():
    return get_encoder("albef-tiny", "random")


def test_albef_tiny_encoder_is_registered_and_recorded(encoder):
    assert resolve_name("albef-tiny").model == "albef-tiny"
    spec = encoder.feature_spec(SamplingSpec("7.5"))
    assert spec.encoder == "albef-tiny" and spec.architecture == "albef:albef-tiny"
    assert spec.extra["albef_config"] == ALBEF_TINY.with_(decoder_layers=0).to_dict() != ALBEF_VQA.with_(decoder_layers=0).to_dict()
    assert spec.extra["tokenizer"]["vocab_size"] == 240
    out = encoder.encode_frames(np.zeros((2, 40, 56, 3), np.uint8))
    assert out["patch"].shape == (2, ALBEF_TINY.grid ** 2, 64) and out["cls_hidden"].shape == (2, 64)
    text = encoder.encode_text(["what is it"])
    assert text["tokens"].shape == (1, 1 + len("whatisit"), 64)  # [CLS] and one token per letter


@pytest.fixture(scope="module")
def token_store(tmp_path_factory, encoder):
    path = tmp_path_factory.mktemp("tiny") / "albef-tiny.zarr"
    st = open_store(path, "a", spec=encoder.feature_spec(SamplingSpec("7.5"), dtype="float32"), dataset="tiny")
    rng = np.random.default_rng(0)
    for v in range(2):
        vid = f"v{v}"
        out = encoder.encode_frames(rng.integers(0, 256, (N_FRAMES, 40, 56, 3), dtype=np.uint8))
        with st.write_video(vid, {"source": {"test": True}}) as w:
            w.append(cls=out["cls"].numpy(), cls_hidden=out["cls_hidden"].numpy(), patch=out["patch"].numpy(),
                     pts=np.arange(N_FRAMES) / 7.5, src_index=np.arange(N_FRAMES), is_repeat=np.zeros(N_FRAMES, bool))
        entries = [{"qid": f"{vid}_{i}", "question": q, "candidates": c, "answer": a, "qtype": "x", "start": None,
                    "end": None} for i, (q, c, a) in enumerate(QUESTIONS)]
        st.write_questions("train", vid, entries, {})
    return path


def test_train_teacher_cli_on_an_albef_tiny_store(token_store, tmp_path):
    out = tmp_path / "ft.pth"
    args = ["--tokens", str(token_store), "--weights", "random", "--out", str(out), "--epochs", "1", "--frames", "2",
            "--batch-size", "4", "--splits", "train"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "WordPiece tokenizer built" not in result.output  # the architecture's own tokenizer
    meta = json.loads(torch.load(out, weights_only=True)["vqacache_finetune"])
    assert meta["architecture"] == "albef-tiny"
    tuned = build_albef_teacher(str(out))  # what --imageqa albef --imageqa-weights does: the checkpoint says tiny
    assert tuned.cfg == ALBEF_TINY.with_(embed_dim=None) and tuned.model_name == "albef-tiny"
    st = open_store(token_store)
    log = st.run_logs()[-1]
    assert log["frames_decoded"] == 0 and log["frames_read_from_cache"] == 2 * 2 and log["questions"] == 4
    spec = st.teacher_spec()
    assert spec.model["architecture"] == "albef:albef-tiny" and spec.extra["finetune"]["architecture"] == "albef-tiny"
    assert st.read_question("v0_0").imageqa.shape == (2, 3)


def test_train_teacher_cli_names_a_bad_architecture(token_store, tmp_path):
    result = CliRunner().invoke(app, ["--tokens", str(token_store), "--weights", "random", "--out",
                                      str(tmp_path / "x.pth"), "--architecture", "albef-huge"])
    assert result.exit_code == 2 and "--architecture" in result.output and "Traceback" not in result.output
