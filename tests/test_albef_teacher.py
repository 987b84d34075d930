"""The ALBEF image-QA teacher (SpARC's): ALBEF's ``rank_answer``, checked piece by piece with a
tiny random ALBEF and a tiny WordPiece vocabulary.

What is checked independently: the answer log-likelihood against the decoder's own LM loss
(transformers' ``labels=`` loss, and a cross-entropy with reduction ``none``); the
first-token probabilities against a decoder call on ``[CLS]``; the top-k against those; the
final softmax against ALBEF's formula; reuse of a video's frames, chunking, and the spec.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from test_albef_checkpoint import TINY, albef_state, tame, tiny_tokenizer
from vqacache.cache_spec.errors import UsageError
from vqacache.featurize.encoders.albef_tokenizer import pre_question, tokenize
from vqacache.featurize.imageqa import ImageQATeacher, get_teacher
from vqacache.featurize.imageqa.albef import AlbefTeacher, build_albef_teacher

QUESTION = "What is the man doing?"
CANDIDATES = ["dig out sand", "wave", "sit down", "playing", "the red car"]
VOCAB = [
    "yes",
    "no",
    "red car",
    "blue ball",
    "dig out sand",
    "wave",
    "sit down",
    "stand up",
    "the dog",
    "two",
    "three",
    "green cat",
    "run",
    "jump up",
    "playing",
    "a boy",
    "desert",
    "in the room",
]


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory):
    return tiny_tokenizer(tmp_path_factory.mktemp("vocab"))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ALBEF VQA checkpoint in ALBEF's key layout with trained-like magnitudes (random
    weights at 0.02 would make every answer nearly equally likely)."""
    path = tmp_path_factory.mktemp("albef") / "ALBEF_VQA.pth"
    torch.save({"model": tame(albef_state(seed=3))}, path)
    return path


@pytest.fixture(scope="module")
def teacher(tok, ckpt: Path) -> AlbefTeacher:
    return build_albef_teacher(str(ckpt), config=TINY, tokenizer=tok, chunk_size=16)


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (3, 40, 56, 3), dtype=np.uint8)


def with_k(t: AlbefTeacher, k: int) -> AlbefTeacher:
    """The same teacher (same model) with another ``k_test``."""
    other = copy.copy(t)
    other.k_test = k
    return other


def _states(t: AlbefTeacher, images, question: str) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        return t._question(images, question)


def test_answer_loglik_is_the_decoders_own_lm_loss(teacher: AlbefTeacher, tok, frames: np.ndarray) -> None:
    images = teacher.encode_images(frames)
    states, mask = _states(teacher, images, QUESTION)  # (F, Lq, D)
    answers = teacher.prepare_vocab(CANDIDATES)
    probs = teacher.rank_candidates(images, QUESTION, CANDIDATES)  # (F, C)
    decoder = teacher.model.decoder
    expected = np.zeros_like(probs)
    for f in range(len(frames)):
        scores = []
        for c in range(len(CANDIDATES)):
            n = int(answers.mask[c].sum())
            ids = answers.ids[c : c + 1, :n]  # [CLS] answer [SEP], no padding
            with torch.no_grad():
                out = decoder(
                    input_ids=ids,
                    encoder_hidden_states=states[f : f + 1],
                    encoder_attention_mask=mask[f : f + 1],
                    labels=ids,
                    use_cache=False,
                )
                # transformers' causal-LM loss: mean over the n - 1 predicted tokens
                own = -float(out.loss) * (n - 1)
                none = F.cross_entropy(out.logits[0, :-1], ids[0, 1:], reduction="none").sum()
                first = torch.log_softmax(
                    decoder(
                        input_ids=ids[:, :1],
                        encoder_hidden_states=states[f : f + 1],
                        encoder_attention_mask=mask[f : f + 1],
                        use_cache=False,
                    ).logits[0, 0],
                    -1,
                )
            assert own == pytest.approx(-float(none), abs=1e-4)
            ll = torch.tensor(own)
            scores.append(ll + first[ids[0, 1]])  # ALBEF: log p(first token) + log p(answer)
        expected[f] = torch.softmax(torch.stack(scores), 0).numpy()
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    assert not np.allclose(probs, probs[:, :1])  # the answers are told apart

    plain = build_albef_teacher(teacher.weights.path.as_posix(), config=TINY, tokenizer=tok, score="loglik")
    loglik = plain.rank_candidates(images, QUESTION, CANDIDATES)
    assert not np.allclose(loglik, probs) and plain.teacher_spec()["ranking"]["score"] == "loglik"


def test_answers_are_albef_tokenized(teacher: AlbefTeacher, tok) -> None:
    answers = teacher.prepare_vocab(["dig out sand", "wave"])
    cls, sep, pad = tok.cls_token_id, tok.sep_token_id, tok.pad_token_id
    dig = tok("dig out sand", add_special_tokens=False)["input_ids"]
    assert answers.ids[0].tolist() == [cls, *dig, sep]
    assert answers.ids[1].tolist()[:3] == [cls, tok.convert_tokens_to_ids("wave"), sep]
    assert answers.ids[1].tolist()[3:] == [pad] * (len(dig) - 1) and answers.mask[1].tolist() == [1, 1, 1] + [0] * (
        len(dig) - 1
    )
    ids, _ = tokenize(tok, [pre_question(QUESTION)], answer=False, max_length=40)
    assert ids[0, 0] == cls and sep not in ids[0].tolist()  # ALBEF's questions have no [SEP]
    assert pre_question("What's the man's job-title / role?!") == "whats the mans job title   role"


def test_probabilities_sum_to_one_with_the_right_shapes(teacher: AlbefTeacher, frames: np.ndarray) -> None:
    images = teacher.encode_images(frames)
    probs = teacher.rank_candidates(images, QUESTION, CANDIDATES)
    assert probs.shape == (3, 5) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    vocab = teacher.prepare_vocab(VOCAB)
    top = with_k(teacher, 6).rank_vocab(images, QUESTION, vocab)
    assert top.probs.shape == top.index.shape == (3, 6) and top.index.dtype == np.int64
    np.testing.assert_allclose(top.probs.sum(axis=1), 1.0, atol=1e-5)
    assert (np.diff(top.probs, axis=1) <= 0).all()  # best first
    assert ((top.index >= 0) & (top.index < len(VOCAB))).all()
    assert all(len(set(row)) == 6 for row in top.index)
    assert teacher.rank_vocab(images, QUESTION, VOCAB, k=128).probs.shape == (3, len(VOCAB))  # k_test 128, capped at V
    with pytest.raises(TypeError):
        teacher.rank_candidates(images, QUESTION, "wave")
    with pytest.raises(ValueError, match="k_test=128"):
        teacher.rank_vocab(images, QUESTION, vocab, k=6)
    assert teacher.rank_candidates(images, QUESTION, []).shape == (3, 0)
    assert teacher.rank_candidates(images.select([]), QUESTION, CANDIDATES).shape == (0, 5)


def test_full_vocab_equals_candidates_and_top_k_is_by_first_token(teacher: AlbefTeacher, frames: np.ndarray) -> None:
    images = teacher.encode_images(frames)
    vocab = teacher.prepare_vocab(VOCAB)
    full = with_k(teacher, len(VOCAB)).rank_vocab(images, QUESTION, vocab, k=len(VOCAB))
    as_candidates = teacher.rank_candidates(images, QUESTION, VOCAB)  # (F, V) in vocabulary order
    np.testing.assert_allclose(np.take_along_axis(as_candidates, full.index, axis=1), full.probs, atol=1e-6)

    states, mask = _states(teacher, images, QUESTION)
    start = torch.full((len(frames), 1), teacher.tokenizer.cls_token_id)
    with torch.no_grad():
        logits = teacher.model.decoder(
            input_ids=start, encoder_hidden_states=states, encoder_attention_mask=mask, use_cache=False
        ).logits[:, 0]
    p1 = torch.softmax(logits, -1)[:, vocab.ids[:, 1]].numpy()  # (F, V) first-token probabilities
    k = 5
    top = with_k(teacher, k).rank_vocab(images, QUESTION, vocab)
    for f in range(len(frames)):
        kept = set(top.index[f].tolist())
        dropped = [a for a in range(len(VOCAB)) if a not in kept]
        assert min(p1[f, list(kept)]) >= max(p1[f, dropped]) - 1e-7  # the top k by first-token probability
        # within the kept set, the probabilities are the full-vocabulary scores renormalised
        sub = as_candidates[f, top.index[f]]
        np.testing.assert_allclose(top.probs[f], sub / sub.sum(), rtol=1e-4, atol=1e-6)


def test_frames_are_encoded_once_and_reused(teacher: AlbefTeacher, frames: np.ndarray) -> None:
    images = teacher.encode_images(frames)
    for question in (QUESTION, "why did the boy fell?"):
        fresh = teacher.rank_candidates(teacher.encode_images(frames), question, CANDIDATES)
        np.testing.assert_array_equal(teacher.rank_candidates(images, question, CANDIDATES), fresh)
    subset = teacher.rank_candidates(images.select([2, 0]), QUESTION, CANDIDATES)
    alone = teacher.rank_candidates(teacher.encode_images(frames[[2, 0]]), QUESTION, CANDIDATES)
    np.testing.assert_allclose(subset, alone, atol=1e-6)


def test_chunked_equals_unchunked(teacher: AlbefTeacher, tok, ckpt: Path, frames: np.ndarray) -> None:
    one = build_albef_teacher(str(ckpt), config=TINY, tokenizer=tok, chunk_size=3)
    all_rows = build_albef_teacher(str(ckpt), config=TINY, tokenizer=tok, chunk_size=10_000)
    images = teacher.encode_images(frames)
    for t in (one, all_rows):
        np.testing.assert_allclose(
            t.rank_candidates(images, QUESTION, CANDIDATES),
            teacher.rank_candidates(images, QUESTION, CANDIDATES),
            atol=1e-6,
        )
        a, b = with_k(t, 7).rank_vocab(images, QUESTION, VOCAB), with_k(teacher, 7).rank_vocab(images, QUESTION, VOCAB)
        np.testing.assert_array_equal(a.index, b.index)
        np.testing.assert_allclose(a.probs, b.probs, atol=1e-6)


def test_spec_registry_and_errors(teacher: AlbefTeacher, tok, tmp_path: Path) -> None:
    assert isinstance(teacher, ImageQATeacher) and teacher.name == "albef"
    spec = teacher.teacher_spec()
    assert spec["weights"]["source"] == "file" and spec["weights"]["identity"].startswith("sha256:")
    assert spec["ranking"] == {
        "method": "albef-rank_answer-v1",
        "score": "albef",
        "k_test": 128,
        "answer_tokens": "[CLS] answer [SEP]",
        "start_token": "[CLS]",
    }
    assert spec["preprocess"]["resize"] == "squash" and spec["compute_dtype"] == "float32"
    assert spec["config"]["decoder_layers"] == 2 and spec["tokenizer"]["vocab_size"] == TINY.vocab_size
    assert "chunk" not in str(spec)  # operational, not semantic

    random = get_teacher("albef", "random:1", config=TINY, tokenizer=tok, k_test=16)
    assert random.teacher_spec()["weights"] == {"source": "random", "identity": "random:1"}
    assert random.teacher_spec()["ranking"]["k_test"] == 16 and random.teacher_spec()["random_init"]
    with pytest.raises(UsageError, match="ALBEF_VQA.pth"):
        get_teacher("albef", None, config=TINY, tokenizer=tok)
    with pytest.raises(UsageError, match="score"):
        build_albef_teacher("random", config=TINY, tokenizer=tok, score="mean")
    with pytest.raises(UsageError, match="k_test"):
        build_albef_teacher("random", config=TINY, tokenizer=tok, k_test=0)
    pretrain = tmp_path / "ALBEF.pth"
    torch.save({"model": albef_state(decoder=False, embed_dim=8)}, pretrain)
    with pytest.raises(UsageError, match="no answer decoder"):
        build_albef_teacher(str(pretrain), config=TINY, tokenizer=tok)
    with_proj = tmp_path / "vqa_with_proj.pth"  # projections are not the teacher's: dropped
    torch.save({"model": albef_state(embed_dim=8)}, with_proj)
    assert build_albef_teacher(str(with_proj), config=TINY, tokenizer=tok).model.vision_proj is None


@pytest.mark.parametrize("score", ["albef", "loglik"])
def test_rank_many_equals_one_call_per_question(tok, ckpt: Path, frames: np.ndarray, score: str) -> None:
    """Batched ranking of one video's questions (multiple choice with different candidate counts,
    open-ended, questions of different token lengths) = one call per question."""
    from vqacache.featurize.imageqa.teacher import TeacherQuestion, rank_questions

    t = build_albef_teacher(str(ckpt), config=TINY, tokenizer=tok, chunk_size=7, score=score, k_test=6)
    images = t.encode_images(frames)
    vocab = t.prepare_vocab(VOCAB)
    questions = [
        TeacherQuestion(QUESTION, tuple(CANDIDATES)),
        TeacherQuestion("why did the boy fell down in the room with the red car?"),
        TeacherQuestion("what color", ("red car", "blue ball")),
        TeacherQuestion("where is the dog?"),
        TeacherQuestion("why did the man wave at the two boys in the desert?", tuple(CANDIDATES[:3])),
    ]
    batched = t.rank_many(images, questions, vocab, 6)
    assert len(batched) == len(questions)
    for q, got in zip(questions, batched):
        if q.candidates:
            np.testing.assert_allclose(got, t.rank_candidates(images, q.question, list(q.candidates)), atol=2e-6)
            assert got.shape == (len(frames), len(q.candidates))
        else:
            alone = t.rank_vocab(images, q.question, vocab, 6)
            np.testing.assert_array_equal(got.index, alone.index)
            np.testing.assert_allclose(got.probs, alone.probs, atol=2e-6)
    assert [r.shape for r in rank_questions(t, images.select([]), questions[:1], vocab, 6)] == [(0, 5)]
    with pytest.raises(ValueError, match="vocabulary"):
        t.rank_many(images, questions[1:2], None, 6)
