"""The BLIP image-QA teacher: answer ranking composed from BlipForQuestionAnswering's parts.

A tiny random BLIP VQA model (2-layer towers, a 36-word WordPiece vocabulary, ``[DEC]`` the
decoder start token) saved with ``save_pretrained``, loaded as ``--weights DIR``. The checks
are independent of the ranking code: the model's own forward pass and loss, transformers'
tokenizer, and the teacher's numbers under other chunkings and frame encodings.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_blip import VOCAB, WORDS, tiny_blip_vqa_config, write_tiny_blip_vqa

from vqacache.cache_spec.errors import UnknownName, UsageError
from vqacache.featurize.imageqa import ImageQATeacher, VocabScores, get_teacher, list_teachers
from vqacache.featurize.imageqa import blip as blip_mod

QUESTION = "what is the man doing?"
CANDIDATES = ["running", "two dogs", "a red ball", "yes", "playing with the cat"]
ANSWERS = [*WORDS[:20], "two dogs", "red ball", "playing with the cat", "how many people", "sitting"]


def _frames(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (n, 6, 8, 3), dtype=np.uint8)
    return np.stack([np.asarray(Image.fromarray(f).resize((160, 120), Image.BILINEAR)) for f in small])


@pytest.fixture(scope="module")
def vqa_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_blip_vqa(tmp_path_factory.mktemp("blip_vqa"), image_size=64)


@pytest.fixture(scope="module")
def teacher(vqa_dir: Path) -> ImageQATeacher:
    return get_teacher("blip", str(vqa_dir), k_test=8)


@pytest.fixture(scope="module")
def images(teacher):
    return teacher.encode_images(_frames(3))


def test_registry_builds_the_teacher_and_it_follows_the_protocol(teacher, vqa_dir: Path) -> None:
    assert "blip" in list_teachers() and isinstance(teacher, ImageQATeacher) and teacher.name == "blip"
    with pytest.raises(UnknownName, match="blip"):
        get_teacher("blip3")
    spec = teacher.teacher_spec()
    assert json.loads(json.dumps(spec)) == spec  # plain JSON
    assert spec["architecture"] == "transformers:BlipForQuestionAnswering"
    assert spec["config"]["text_config"]["vocab_size"] == len(VOCAB) and spec["config"]["vision_config"]["image_size"] == 64
    assert spec["weights"]["source"] == "file" and spec["weights"]["identity"].startswith("sha256:")
    assert spec["ranking"]["k"] == 8 and spec["ranking"]["method"] == blip_mod.RANKING
    assert spec["preprocess"]["size"] == 64 and spec["preprocess"]["resize"] == "squash"
    assert spec["compute_dtype"] == "float32" and spec["tokenizer"]["identity"] == "weights"
    assert teacher.start_id == VOCAB.index("[DEC]") and teacher.end_id == VOCAB.index("[SEP]")


def test_log_likelihoods_equal_the_models_own_loss(teacher, vqa_dir: Path) -> None:
    """(a) Each candidate's summed log-probability = -(mean token loss x tokens) from
    BlipForQuestionAnswering.forward (vision, question encoder and decoder, labels=...)."""
    from transformers import BlipForQuestionAnswering

    model = BlipForQuestionAnswering.from_pretrained(vqa_dir).eval()
    assert model.config.text_config.label_smoothing == 0.0  # the loss is then the exact NLL
    frames = _frames(2, seed=1)
    scores = teacher.answer_log_likelihoods(teacher.encode_images(frames), QUESTION, CANDIDATES)  # (2, C)
    pixels = teacher.transform(frames)
    question = teacher.tokenizer([QUESTION], return_tensors="pt")["input_ids"]
    for f in range(2):
        for c, answer in enumerate(CANDIDATES):
            pieces = teacher.tokenizer([answer], add_special_tokens=False)["input_ids"][0]
            ids = torch.tensor([[model.decoder_start_token_id, *pieces, model.config.text_config.sep_token_id]])
            with torch.no_grad():
                loss = model(input_ids=question, pixel_values=pixels[f : f + 1], decoder_input_ids=ids, labels=ids).loss
            expected = -float(loss) * (ids.shape[1] - 1)  # mean over the tokens after [DEC]
            assert scores[f, c] == pytest.approx(expected, abs=1e-4, rel=1e-5), (f, answer)


def test_probabilities_are_a_softmax_over_candidates(teacher, images) -> None:
    """(b) (F, C), rows sum to 1, and they are the softmax of the log-likelihoods."""
    probs = teacher.rank_candidates(images, QUESTION, CANDIDATES)
    assert probs.shape == (3, len(CANDIDATES)) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    scores = teacher.answer_log_likelihoods(images, QUESTION, CANDIDATES)
    np.testing.assert_allclose(probs, torch.from_numpy(scores).softmax(-1).numpy(), atol=1e-6)
    assert probs.std(axis=0).max() > 1e-3  # frames matter
    other = teacher.rank_candidates(images, "how many people", CANDIDATES)
    assert np.abs(other - probs).max() > 1e-3  # the question matters
    assert teacher.rank_candidates(teacher.encode_images(np.zeros((0, 120, 160, 3), np.uint8)), QUESTION, CANDIDATES).shape == (0, 5)


def test_rank_vocab_with_k_equal_to_the_vocabulary_is_full_ranking(vqa_dir: Path, images) -> None:
    """(c) k = V: the same distribution as rank_candidates over the whole vocabulary."""
    full = get_teacher("blip", str(vqa_dir), k_test=len(ANSWERS))
    vocab = full.prepare_vocab(ANSWERS)
    out = full.rank_vocab(images, QUESTION, vocab, len(ANSWERS))
    assert isinstance(out, VocabScores) and out.probs.shape == out.index.shape == (3, len(ANSWERS))
    assert out.index.dtype == np.int64 and out.probs.dtype == np.float32
    expected = full.rank_candidates(images, QUESTION, ANSWERS)  # (F, V) in vocabulary order
    for f in range(3):
        assert sorted(out.index[f].tolist()) == list(range(len(ANSWERS)))
        np.testing.assert_allclose(out.probs[f], expected[f, out.index[f]], atol=1e-6)
        assert np.all(np.diff(out.probs[f]) <= 0)  # best first


def test_rank_vocab_top_k_is_the_top_k_by_first_token_probability(teacher, vqa_dir: Path, images) -> None:
    """(c) k < V: the k answers rescored are the k with the highest first-wordpiece probability,
    computed here from the model's own modules and the tokenizer; softmax over those k."""
    from transformers import BlipForQuestionAnswering

    vocab = teacher.prepare_vocab(ANSWERS)
    out = teacher.rank_vocab(images, QUESTION, vocab, 8)
    assert out.probs.shape == (3, 8)
    np.testing.assert_allclose(out.probs.sum(axis=1), 1.0, atol=1e-6)

    model = BlipForQuestionAnswering.from_pretrained(vqa_dir).eval()
    question = teacher.tokenizer([QUESTION], return_tensors="pt")["input_ids"].expand(3, -1)
    first = [teacher.tokenizer([a], add_special_tokens=False)["input_ids"][0][0] for a in ANSWERS]
    with torch.no_grad():
        image_embeds = model.vision_model(pixel_values=teacher.transform(_frames(3))).last_hidden_state
        q = model.text_encoder(input_ids=question, encoder_hidden_states=image_embeds).last_hidden_state
        start = torch.full((3, 1), model.decoder_start_token_id)
        logits = model.text_decoder(input_ids=start, encoder_hidden_states=q).logits[:, 0]
    p_first = logits.softmax(-1)[:, first].numpy()  # (F, V)
    for f in range(3):
        chosen = set(out.index[f].tolist())
        rest = [i for i in range(len(ANSWERS)) if i not in chosen]
        assert len(chosen) == 8
        assert p_first[f, sorted(chosen)].min() >= p_first[f, rest].max() - 1e-7  # ties may go either way
        expected = teacher.rank_candidates(images, QUESTION, [ANSWERS[i] for i in out.index[f]])[f]
        np.testing.assert_allclose(out.probs[f], expected, atol=1e-6)
    with pytest.raises(ValueError, match="k_test=8"):
        teacher.rank_vocab(images, QUESTION, vocab, 4)


def test_frame_features_reused_across_questions_equal_recomputing(teacher) -> None:
    """(d) One encode_images for several questions gives what encoding per question gives."""
    frames = _frames(4, seed=2)
    shared = teacher.encode_images(frames)
    vocab = teacher.prepare_vocab(ANSWERS)
    for question in (QUESTION, "how many people", "what color of the ball"):
        fresh = teacher.encode_images(frames)
        np.testing.assert_array_equal(
            teacher.rank_candidates(shared, question, CANDIDATES), teacher.rank_candidates(fresh, question, CANDIDATES)
        )
        a, b = teacher.rank_vocab(shared, question, vocab, 8), teacher.rank_vocab(fresh, question, vocab, 8)
        np.testing.assert_array_equal(a.index, b.index)
        np.testing.assert_array_equal(a.probs, b.probs)
    batched = teacher.encode_images(frames[:2]).embeds, teacher.encode_images(frames[2:]).embeds
    torch.testing.assert_close(torch.cat(batched), shared.embeds, atol=1e-6, rtol=1e-5)


def test_chunking_does_not_change_the_numbers(vqa_dir: Path, teacher, images) -> None:
    """(e) One (frame, answer) row per decoder call vs all rows at once."""
    one = get_teacher("blip", str(vqa_dir), k_test=8, chunk_rows=1)
    unchunked = get_teacher("blip", str(vqa_dir), k_test=8, chunk_rows=10_000)
    np.testing.assert_allclose(
        one.answer_log_likelihoods(images, QUESTION, CANDIDATES),
        unchunked.answer_log_likelihoods(images, QUESTION, CANDIDATES), atol=1e-5, rtol=1e-6,
    )
    vocab = teacher.prepare_vocab(ANSWERS)
    a, b = one.rank_vocab(images, QUESTION, vocab, 8), unchunked.rank_vocab(images, QUESTION, vocab, 8)
    np.testing.assert_array_equal(a.index, b.index)
    np.testing.assert_allclose(a.probs, b.probs, atol=1e-6)


def test_score_blip_is_blips_label_smoothed_ranking_loss(vqa_dir: Path, tmp_path: Path) -> None:
    """score="blip": each candidate's score = -(mean token loss x tokens) from
    BlipForQuestionAnswering.forward with the text config's label_smoothing = 0.1, the loss BLIP's
    rank_answer ranks with; the spec says which score it is."""
    from transformers import BlipForQuestionAnswering

    smoothed = get_teacher("blip", str(vqa_dir), k_test=8, score="blip")
    assert smoothed.teacher_spec()["ranking"]["method"] != blip_mod.RANKING
    assert "label-smoothed (0.1)" in smoothed.teacher_spec()["ranking"]["score"]
    model = BlipForQuestionAnswering.from_pretrained(vqa_dir).eval()
    model.text_decoder.label_smoothing = 0.1
    frames = _frames(2, seed=4)
    scores = smoothed.answer_log_likelihoods(smoothed.encode_images(frames), QUESTION, CANDIDATES)
    plain = get_teacher("blip", str(vqa_dir), k_test=8).answer_log_likelihoods(
        smoothed.encode_images(frames), QUESTION, CANDIDATES)
    assert np.abs(scores - plain).max() > 1e-2  # the smoothing matters
    pixels = smoothed.transform(frames)
    question = smoothed.tokenizer([QUESTION], return_tensors="pt")["input_ids"]
    for f in range(2):
        for c, answer in enumerate(CANDIDATES):
            pieces = smoothed.tokenizer([answer], add_special_tokens=False)["input_ids"][0]
            ids = torch.tensor([[model.decoder_start_token_id, *pieces, model.config.text_config.sep_token_id]])
            with torch.no_grad():
                loss = model(input_ids=question, pixel_values=pixels[f : f + 1], decoder_input_ids=ids, labels=ids).loss
            assert scores[f, c] == pytest.approx(-float(loss) * (ids.shape[1] - 1), abs=1e-4, rel=1e-5), (f, answer)
    with pytest.raises(UsageError, match="loglik"):
        get_teacher("blip", str(vqa_dir), score="albef")
    from vqacache.featurize.imageqa.task import TeacherArgs, cached_teacher  # --imageqa-score reaches the teacher

    built = cached_teacher(TeacherArgs("blip", str(vqa_dir), "cpu", "float32", k=8, score="blip"))
    assert built.teacher_spec() == smoothed.teacher_spec()


def test_rank_many_equals_one_call_per_question(teacher, vqa_dir: Path) -> None:
    """Batched ranking of a video's questions (multiple choice with different candidate counts
    and question lengths, and open-ended) = ranking each question alone; rank_questions takes
    the batched path when the teacher has one, the per-question path otherwise."""
    from vqacache.featurize.imageqa.teacher import TeacherQuestion, rank_questions

    images = teacher.encode_images(_frames(3, seed=5))
    vocab = teacher.prepare_vocab(ANSWERS)
    questions = [
        TeacherQuestion(QUESTION, tuple(CANDIDATES)),
        TeacherQuestion("how many people are playing with the red ball with the dog?"),
        TeacherQuestion("what color", ("red", "blue")),
        TeacherQuestion("is the dog sitting?"),
        TeacherQuestion("what is the woman doing with the cat and the two dogs?", tuple(CANDIDATES[:3])),
    ]

    class OneByOne:  # the teacher's per-question methods only
        def rank_candidates(self, *a):  # noqa: ANN002, ANN202
            return teacher.rank_candidates(*a)

        def rank_vocab(self, *a):  # noqa: ANN002, ANN202
            return teacher.rank_vocab(*a)

    batched = rank_questions(teacher, images, questions, vocab, 8)
    single = rank_questions(OneByOne(), images, questions, vocab, 8)
    assert len(batched) == len(single) == len(questions)
    for q, a, b in zip(questions, batched, single):
        if q.candidates:
            assert a.shape == (3, len(q.candidates))
            np.testing.assert_allclose(a, b, atol=2e-6)
        else:
            assert isinstance(a, VocabScores) and a.probs.shape == (3, 8)
            np.testing.assert_array_equal(a.index, b.index)
            np.testing.assert_allclose(a.probs, b.probs, atol=2e-6)
    assert rank_questions(teacher, images, [], vocab, 8) == []
    with pytest.raises(ValueError, match="vocabulary"):
        teacher.rank_many(images, [TeacherQuestion(QUESTION)], None, 8)


def test_weights_random_tokenizer_option_and_errors(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, vqa_dir: Path, network_attempts: list[str]
) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(blip_mod, "default_config", lambda: tiny_blip_vqa_config(64))  # not the 385M real one
    vocab_txt = tmp_path / "vocab.txt"
    vocab_txt.write_text("\n".join(VOCAB) + "\n")
    before = torch.random.get_rng_state()
    r0 = get_teacher("blip", "random", tokenizer=str(vocab_txt))
    r1 = get_teacher("blip", "random:1", tokenizer=str(vocab_txt))
    assert torch.equal(torch.random.get_rng_state(), before)
    spec = r0.teacher_spec()
    assert spec["weights"] == {"source": "random", "identity": "random:0"} and spec["random_init"] == "vqacache-normal-v1"
    assert spec["tokenizer"]["identity"].startswith("sha256:")
    frames = _frames(2, seed=3)
    p0 = r0.rank_candidates(r0.encode_images(frames), QUESTION, CANDIDATES)
    again = get_teacher("blip", "random:0", tokenizer=str(vocab_txt))
    np.testing.assert_array_equal(p0, again.rank_candidates(again.encode_images(frames), QUESTION, CANDIDATES))
    assert not np.allclose(p0, r1.rank_candidates(r1.encode_images(frames), QUESTION, CANDIDATES))

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UsageError) as err:
        get_teacher("blip")  # Salesforce/blip-vqa-base: not cached, offline
    assert "Salesforce/blip-vqa-base" in str(err.value) and "--weights" in str(err.value) and "\n" not in str(err.value)
    assert network_attempts == []  # answered from the cache's absence, no hub retries
    with pytest.raises(UsageError, match="tokenizer"):
        get_teacher("blip", "random")  # random weights, no tokenizer, nothing cached
    with pytest.raises(UsageError, match="needs a directory"):
        get_teacher("blip", str(vqa_dir / "model.safetensors"))
    from transformers import BlipForConditionalGeneration

    captioner = tmp_path / "captioner"  # a BLIP checkpoint without the VQA question encoder
    BlipForConditionalGeneration(tiny_blip_vqa_config(64)).save_pretrained(captioner)
    with pytest.raises(UsageError, match="not a complete"):  # never run with randomly initialised parts
        get_teacher("blip", str(captioner), tokenizer=str(vocab_txt))
    with pytest.raises(UsageError, match="k_test"):
        get_teacher("blip", str(vqa_dir), k_test=0)
