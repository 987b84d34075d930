"""The training recipe: validation counts questions without features as wrong, the step counter
reaches ``loss()`` and survives a resume, the checkpoint record, chance accuracy.

Expected values are recomputed independently: accuracy from the written prediction file and
the listed question count; chance from the candidate counts; steps by counting calls.
Mutations tried (each fails a test here):

1. ``listed_accuracy`` returning the accuracy over the used questions (missing ones dropped, the
   old behaviour): ``test_missing_validation_questions_count_as_wrong`` fails.
2. ``self.step += 1`` removed from ``train_epoch``: ``test_step_counter_reaches_loss_and_resumes`` fails.
3. ``resume`` not restoring ``self.step`` (0 after a resume): ``test_step_counter_reaches_loss_and_resumes`` fails.
4. chance as ``100 / max candidates`` over the used questions only: ``test_chance_accuracy_by_hand`` fails.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from vqacache.cache_spec import open_store
from vqacache.heads.checkpoint import Checkpoint
from vqacache.heads.methods import METHODS
from vqacache.heads.questions import Question, QuestionRef
from vqacache.heads.synthetic import make_temporal_store
from vqacache.heads.train import TrainConfig, load_checkpoint, train
from vqacache.heads.validation import chance_accuracy, listed_accuracy

SMALL = {"num_frames": 8, "num_select": 2, "num_layers": 1, "num_heads": 2, "dim": 16}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_temporal_store(tmp_path_factory.mktemp("recipe") / "s.zarr", {"train": 6, "val": 3}, n_frames=10,
                               dim=16, n_patches=2, teacher=False).path


def _listed(path, split):
    s = open_store(path)
    return [Question(qid=q.qid, video_id=q.video_id, split=split, question=q.question, candidates=q.candidates,
                     answer=q.answer, qtype=q.qtype) for q in (s.read_question(qid) for qid in s.questions(split))]


def test_missing_validation_questions_count_as_wrong(store, tmp_path):
    val = _listed(store, "val")
    ghosts = [Question(qid=f"ghost_{i}", video_id="ghost", split="val", question="?", candidates=("x", "y"), answer=0)
              for i in range(3)]
    messages = []

    class Rep:
        def start(self, *a): ...
        def advance(self, *a): ...
        def message(self, text): messages.append(text)
        def finish(self): ...

    m = train(TrainConfig(method="uniform", store=str(store), out=str(tmp_path / "r"), epochs=1, batch_size=4,
                          lr=1e-3, args=SMALL), Rep(), questions={"val": val + ghosts})
    preds = json.loads((tmp_path / "r" / "predictions" / "val-last.json").read_text())
    correct = sum(p["prediction"] == p["answer"] for p in preds.values())
    assert len(preds) == 6 and m["val_missing"] == 3 and m["val"]["listed"] == 9
    assert m["val_acc"] == pytest.approx(100.0 * correct / 9)  # the 3 without features are wrong
    assert m["val_acc_with_features"] == pytest.approx(100.0 * correct / 6)
    assert any("3 of 9 without features, counted wrong" in t for t in messages)
    assert any("counted wrong in val_acc" in t for t in messages)  # the set-up warning says it too
    assert listed_accuracy(None, 0, 0) is None and listed_accuracy(50.0, 2, 2) == 25.0


def test_step_counter_reaches_loss_and_resumes(store, tmp_path, monkeypatch):
    base = METHODS["uniform"]
    seen: list[tuple[int, int]] = []

    def loss(model, batch, args):
        seen.append((batch["train_step"].step, batch["train_step"].total))
        return base.loss(model, batch, args)

    monkeypatch.setitem(METHODS, "uniform", dataclasses.replace(base, loss=loss))
    cfg = dict(method="uniform", store=str(store), batch_size=4, lr=1e-3, args=SMALL, epochs=3)
    train(TrainConfig(out=str(tmp_path / "cut"), stop_after=1, **cfg))  # 12 questions / 4: 3 steps an epoch
    assert seen == [(0, 9), (1, 9), (2, 9)]
    ckpt = Checkpoint.from_dict(load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt"))
    assert ckpt.step == 3 and ckpt.epoch == 0 and ckpt.method == "uniform"
    seen.clear()
    m = train(TrainConfig(out=str(tmp_path / "cut"), resume=True, **cfg))
    assert [s for s, _ in seen] == list(range(3, 9)) and m["step"] == 9


def test_chance_accuracy_by_hand():
    def ref(q, c, answer=0):
        return QuestionRef(qid=q, video_id="v", split_key="s", bundle_key="b", row=0, answer=answer, qtype=None,
                           start=None, end=None, n_candidates=c)

    mc = [ref("a", 4), ref("b", 5), ref("c", 2)]
    assert chance_accuracy(mc, 0, []) == pytest.approx(100 * (1 / 4 + 1 / 5 + 1 / 2) / 3)
    assert chance_accuracy(mc, 1, []) == pytest.approx(100 * (1 / 4 + 1 / 5 + 1 / 2) / 4)  # a missing one: wrong
    train_refs = [ref(str(i), 0, a) for i, a in enumerate(["dog", "dog", "cat"])]
    val = [ref("x", 0, "dog"), ref("y", 0, "cat")]
    assert chance_accuracy(val, 0, train_refs) == pytest.approx(50.0)  # always "dog"
    assert chance_accuracy([], 0, []) is None


def test_workers_give_the_losses_of_the_main_process(store, tmp_path):
    """Persistent loader workers (pread readers reopened in each) feed the same batches in the
    same (seed, epoch) order as reading in the main process."""
    cfg = dict(method="uniform", store=str(store), batch_size=4, lr=1e-3, args=SMALL, epochs=2)
    main = train(TrainConfig(out=str(tmp_path / "w0"), workers=0, **cfg))
    workers = train(TrainConfig(out=str(tmp_path / "w1"), workers=1, **cfg))
    assert workers["losses"] == main["losses"] and workers["val_acc"] == main["val_acc"]
