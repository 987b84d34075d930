"""A batch with no labelled row (every ``answer`` -1) contributes a zero loss, never NaN.

Padded candidates score ``-inf`` (:class:`~vqacache.heads.modules.CandidateScorer`), so a
"zero" computed as ``logits.sum() * 0`` is NaN, and a mean over zero rows is NaN too; one such
batch would turn every parameter into NaN at the next optimizer step.

Planted mistakes these tests catch (each was planted and a test failed):

1. ``answer_loss`` returning ``logits.sum() * 0.0`` for an unlabelled batch (the old code):
   NaN with a padded candidate -> ``test_answer_loss_without_labels_is_zero_with_padding``
   and the method tests fail.
2. ``sparc``'s loss without its early return for an unlabelled batch (means over zero rows):
   NaN or an error on the empty batch -> ``test_every_method_gives_zero_loss...[sparc]`` fails.
3. ``zero_loss`` returning a detached ``torch.zeros(())``: ``backward`` raises (no graph)
   -> the sparc case fails; the training step must still be able to call ``backward``.
"""

from __future__ import annotations

import math

import pytest
import torch

from vqacache.heads.data import QADataset, collate
from vqacache.heads.methods import get_method, method_args
from vqacache.heads.methods.common import answer_loss
from vqacache.heads.synthetic import make_temporal_store

SMALL = {"num_frames": 8, "num_select": 2, "num_layers": 1, "num_heads": 2, "dim": 16}


@pytest.fixture(scope="module")
def batch_and_dims(tmp_path_factory):
    path = make_temporal_store(tmp_path_factory.mktemp("losses") / "t.zarr", splits={"train": 4, "val": 1},
                               n_frames=10, dim=16, n_patches=2).path
    ds = QADataset(path, "train", num_frames=8, patch_frames="all")
    return collate([ds[i] for i in range(4)]), ds.dims()


def test_answer_loss_without_labels_is_zero_with_padding():
    logits = torch.tensor([[1.0, 2.0, float("-inf")], [0.0, 1.0, 2.0]], requires_grad=True)
    loss = answer_loss(logits, torch.tensor([-1, -1]))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))
    # a labelled row still counts, and only it
    labelled = answer_loss(logits.detach(), torch.tensor([-1, 2]))
    assert math.isclose(labelled.item(), torch.nn.functional.cross_entropy(logits.detach()[1:], torch.tensor([2])).item())


@pytest.mark.parametrize("method,extra", [("uniform", {}), ("videodistill", {}), ("sparc", {"backbone": "uniform", "mixup_prob": 0.0})])
def test_every_method_gives_zero_loss_and_finite_zero_gradients_without_labels(batch_and_dims, method, extra):
    batch, dims = batch_and_dims
    answer = batch["answer"]
    pad = (answer + 1) % batch["cand_mask"].shape[1]  # (B,) a wrong candidate of each row
    cand_mask = batch["cand_mask"].clone()
    cand_mask[torch.arange(len(pad)), pad] = False  # padded: its logit is -inf
    teacher = batch["imageqa"] * cand_mask[:, None, :]  # (B, N, C): nothing on a padded candidate
    teacher = teacher / teacher.sum(-1, keepdim=True)
    batch = {**batch, "answer": torch.full_like(answer, -1), "cand_mask": cand_mask, "imageqa": teacher}
    m = get_method(method)
    args = method_args(m, {**SMALL, **extra})
    torch.manual_seed(0)
    model = m.build(args, dims)
    loss, logs = m.loss(model, batch, args)
    assert loss.item() == 0.0 and logs["loss"] == 0.0
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert all(torch.isfinite(g).all() and not g.any() for g in grads)

    # the same batch with its labels back gives a real, finite loss (the test can tell them apart)
    labelled = {**batch, "answer": answer}
    model.zero_grad()
    real, _ = m.loss(model, labelled, args)
    assert torch.isfinite(real) and real.item() > 0
