"""Questions of one split as a torch :class:`~torch.utils.data.Dataset`, read from one or more
stores of the same dataset.

Per question, :class:`QADataset` yields (names and shapes of one sample; ``collate`` pads a
batch and adds a leading B):

* ``cls`` (N, E) float32: N dense frames' CLS vectors, spread uniformly over the video's
  frames at the store's fps (7.5 fps), ``N = num_frames`` (100 as in VideoDistill). A
  question with a segment (``start``/``end`` seconds) draws its frames only from the frames
  whose ``pts`` lie in ``[start, end]`` (the single nearest frame when none does). A clip
  with fewer than N frames gives all of them and ``frame_mask`` (N,) bool marks the real
  rows (True); frames are never duplicated to fill N.
* ``patch`` (N', P, W) float32, only when ``patch_frames`` asks for it (see below).
* ``text`` (E,) the question's sentence vector; ``cand`` (C, E) and ``cand_mask`` (C,) the
  candidates' sentence vectors (multiple choice), or ``cand`` (0, E) for open-ended sets.
* ``answer`` int64: the correct candidate's index (multiple choice) or the answer's index in
  ``answer_vocab`` (open-ended); -1 when unlabelled or not in the vocabulary.
* ``imageqa`` (N, C) float32 and ``has_imageqa`` bool: the image-QA teacher's answer
  probabilities for each of the N frames (the teacher frame nearest in pts), when the store
  has them (``imageqa`` (F, C) and ``imageqa_pts`` (F,) on the question, see
  :func:`_teacher`); zeros and False otherwise. Methods that need them (SpARC) raise
  :class:`MissingTeacher` when a batch lacks them.

**Several stores.** Each input has a *role* (``cls``, ``patch``, ``text``, ``imageqa``) and
comes from the primary store unless ``roles`` names another store of the same dataset for it,
e.g. ``QADataset("clip-b16.zarr", "train", roles={"patch": "eva-g.zarr"})``: CLS vectors and
text from the CLIP store, patch tokens from the EVA one (:mod:`vqacache.heads.stores` says why
roles are named rather than guessed, and what is checked). The frames are chosen on the
``cls`` store's pts; the ``patch`` store's frames are the ones with the same pts
(:func:`~vqacache.heads.stores.match_frames`), never the same index.

**Which questions** (:mod:`vqacache.heads.questions`): the text store's bundles, or a dataset
adapter's list (``questions``). Questions without features (no bundle, stale text, video not
complete in a frame store) are left out and counted in ``coverage``.

Reads are lazy: construction reads only the question bundles' JSON attributes (and the pts of
a few videos to check the stores' alignment); each ``__getitem__`` reads one question's text
rows and the selected frames of one video with :class:`~vqacache.heads.row_reads.RowReader`
(``pread`` of the rows' bytes in the uncompressed shards, one read per run of nearby rows;
zarr's own reads for any other layout). A video is opened once per process (its arrays'
metadata, pts, shard indexes). The stores are opened again in each DataLoader worker (the
open handles are dropped when the dataset is pickled) and their fingerprints checked again.

**Patch tokens** (``patch_frames``). VideoDistill's straight-through top-K
(``select_frames(mask, patches)``, with the gradients of ``mask @ patches``) sends a gradient to the selection
logit of *every* candidate frame n through ``<dL/d selected, patches[n]>``; fetching only the
frames picked by the sampler would leave that gradient only on the K picked entries (a
biased, much noisier estimator) and would need a second, synchronous store read inside the
training step, after the sampler ran, outside the DataLoader's workers and prefetch. We
therefore read the patch tokens of **all N frames** (``patch_frames="all"``) for the
methods that select frames, and recommend a store featurized with ``--patch-pool``: per
sample that is ``N * P * W * 2`` bytes of float16, e.g. 100 x 196 x 768 x 2 = 29 MiB for an
unpooled ViT-B/16 (too much per sample, and the same shard reads) versus 100 x 4 x 768 x 2 =
0.6 MiB with ``--patch-pool 7`` (2 x 2 grid). A method that does not select (``uniform``)
reads only its K uniformly placed frames (``patch_frames="uniform"``, ``patch`` (K, P, W)).

**T frames by segments** (``patch_frames="segments"``, VLAP). The question's frames (all of
them, or its segment's) are cut into T = ``num_frames`` equal parts; a training dataset
(``training=True``) takes one frame at a uniformly random place in each part, an evaluation
dataset each part's midpoint (:func:`segment_positions`; the released VLAP/SeViLA video
loaders' rule). ``cls`` (T, E) and ``patch`` (T, P, W) are those T frames, always T rows: a
clip with fewer than T frames repeats frames (parts share a frame), since the Frame-Prompter
needs exactly T = K S frames. The draw uses torch's global RNG (restored on resume; seeded
per DataLoader worker). ``InMemory`` datasets read each sample once, so their draw is fixed.

**Text as strings** (``text="strings"``, VLAP and MCG). Each sample also carries the question's
text ``question`` (str) and ``candidates`` (list of str) from the question bundle's metadata,
for methods that tokenize text themselves; such a dataset reads any store's bundles: a
vision-only store's (``vitg``: strings, no sentence vectors) give ``text`` (0,) and no ``cand``.

**Stores with patches on a sub-grid** (``vqa-featurize --patch-fps F``: CLS on every frame,
patches on fewer). When a method reads patches, a question's frames are chosen, by the same
rule, among the frames that *have* patch tokens only (the ``patch`` store's
:func:`~vqacache.cache_spec.patch_frames.patch_frame_rows`, matched to the ``cls`` store's
frames by pts), so ``cls`` and ``patch`` rows stay the same frames; methods without patches
keep every frame.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from vqacache.cache_spec.errors import SpecMismatch, UsageError, VqaCacheError
from vqacache.cache_spec.frame_selection import frame_indices, uniform_positions
from vqacache.cache_spec.patch_frames import patch_frame_rows
from vqacache.cache_spec.store import FeatureStore
from vqacache.heads.batch import collate, to_device
from vqacache.heads.row_reads import RowReader
from vqacache.heads.questions import Coverage, Question, QuestionRef, resolve_questions
from vqacache.heads.stores import PTS_TOLERANCE_S, StoreLike, StoreSet, match_frames, nearest_frames, require_patches

PatchFrames = Literal["none", "all", "uniform", "segments"]
TextMode = Literal["vectors", "strings"]

__all__ = [
    "Coverage", "MissingTeacher", "NoQuestions", "QADataset", "Question", "QuestionRef", "StoreSet",
    "build_answer_vocab", "collate", "frame_indices", "segment_positions", "store_texts", "to_device",
    "uniform_positions",
]


def segment_positions(n_valid: int, parts: int, draws: np.ndarray | None = None) -> np.ndarray:
    """Positions (parts,) in ``range(n_valid)``, one per equal part of it: part t covers
    ``[t n / parts, (t + 1) n / parts)``; ``draws`` (parts,) in [0, 1) place each inside its part
    (training), None takes the midpoints (evaluation). Repeats when parts > n_valid."""
    if n_valid <= 0:
        raise ValueError("no frames to choose from")
    u = np.full(parts, 0.5) if draws is None else np.asarray(draws, dtype=np.float64)
    pos = np.floor((np.arange(parts) + u) * n_valid / parts).astype(np.int64)
    return np.clip(pos, 0, n_valid - 1)


def store_texts(stores: StoreSet) -> list[str]:
    """Every question's and candidate's text in the text store's complete bundles (all splits),
    read from the bundles' metadata (e.g. to build a tokenizer's vocabulary offline)."""
    out: list[str] = []
    try:
        splits = stores.store("text").root["questions"]
    except KeyError:
        return out
    for _, split in splits.groups():
        for key, bundle in split.groups():
            if key.startswith(".tmp-") or bundle.attrs.get("complete") is not True:
                continue
            for e in bundle.attrs["entries"]:
                out.append(str(e.get("question", "")))
                out.extend(str(c) for c in e.get("candidates") or ())
    return out


class MissingTeacher(VqaCacheError, ValueError):
    """A method needs the image-QA teacher's per-frame probabilities and the store has none."""


class NoQuestions(VqaCacheError, ValueError):
    """A split has no complete questions (or none whose video is complete) in the store."""


def build_answer_vocab(refs: list[QuestionRef]) -> list[str]:
    """Open-ended answers seen in ``refs`` (the training split), most frequent first, then by text."""
    counts: dict[str, int] = {}
    for r in refs:
        if isinstance(r.answer, str):
            counts[r.answer] = counts.get(r.answer, 0) + 1
    return sorted(counts, key=lambda a: (-counts[a], a))


class QADataset(Dataset):
    """One split read from one or more stores; see the module docstring for the sample layout.

    Args:
        store: the primary store (path or open store), or a ready :class:`StoreSet`.
        split: split name.
        num_frames: N.
        patch_frames: "none", "all" (N frames' patches), "uniform" (``num_patch_frames``
            uniformly placed frames among the N) or "segments" (N frames, one per equal part).
        num_patch_frames: K for ``patch_frames="uniform"``.
        expect_fingerprint: refuse the primary store unless its fingerprint is this one.
        answer_vocab: open-ended answers (index = class); built from this split when None.
        roles: ``{role: store}`` overriding the primary store for some inputs.
        questions: the split's questions from a dataset adapter (None: the text store's).
        expect_fingerprints: ``{role: fingerprint}`` to refuse (a checkpoint's).
        dataset: refuse stores of another dataset.
        training: ``patch_frames="segments"`` draws a random frame in each part (else midpoints).
        text: ``"vectors"`` (the text store's sentence vectors; a store without them is refused)
            or ``"strings"`` (the question and candidate strings, ``question`` and ``candidates``
            in each sample, for methods that tokenize them; vectors too where the store has them).

    Attributes: ``stores`` (the :class:`StoreSet`), ``fingerprint`` (the primary store's),
    ``fingerprints`` (per role), ``refs`` (usable questions), ``coverage``.
    """

    def __init__(
        self,
        store: StoreLike | StoreSet,
        split: str,
        num_frames: int = 100,
        patch_frames: PatchFrames = "none",
        num_patch_frames: int = 16,
        expect_fingerprint: str | None = None,
        answer_vocab: list[str] | None = None,
        *,
        roles: Mapping[str, StoreLike] | None = None,
        questions: Sequence[Question] | None = None,
        expect_fingerprints: Mapping[str, str] | None = None,
        dataset: str | None = None,
        training: bool = False,
        text: TextMode = "vectors",
        text_tokens: bool = False,
    ) -> None:
        if patch_frames not in ("none", "all", "uniform", "segments"):
            raise UsageError(f"patch_frames must be none, all, uniform or segments, not {patch_frames!r}")
        if text not in ("vectors", "strings"):
            raise UsageError(f"text must be vectors or strings, not {text!r}")
        self.training = training
        self.text = text
        self.text_tokens = text_tokens  # also yield the question's token states (HGA)
        if isinstance(store, StoreSet):
            if roles:
                raise ValueError("give roles to the StoreSet, not beside it")
            stores = store
            stores.check_dataset(dataset)
            stores.check_expected(expect_fingerprints or {})
        else:
            stores = StoreSet(store, roles, dataset=dataset, expect=expect_fingerprints)
        if text == "vectors":
            stores.check_text()
        if expect_fingerprint is not None and stores.primary_fingerprint != expect_fingerprint:
            raise SpecMismatch(
                f"store {stores.primary_path} has fingerprint {stores.primary_fingerprint[:12]}, the run expects "
                f"{expect_fingerprint[:12]}; features from another spec would silently change the inputs"
            )
        if patch_frames != "none":
            require_patches(stores)
        self.stores = stores
        self.path = stores.primary_path
        self.fingerprint = stores.primary_fingerprint
        self.fingerprints = dict(stores.fingerprints)
        self.spec = stores.store("cls").spec
        self.split = split
        self.num_frames = num_frames
        self.patch_frames = patch_frames
        self.num_patch_frames = num_patch_frames
        frame_roles = ("cls", "patch") if patch_frames != "none" else ("cls",)
        self.refs, self.coverage = resolve_questions(stores, split, frame_roles, questions)
        if not self.refs:
            raise NoQuestions(
                f"no question of split {split!r} has all its features in {stores!r}"
                + (f"; {self.coverage.summary()}" if self.coverage.missing else "")
            )
        if patch_frames != "none":
            stores.check_alignment(sorted({r.video_id for r in self.refs}))
        self.multiple_choice = self.refs[0].n_candidates > 0
        self.answer_vocab = None if self.multiple_choice else (answer_vocab or build_answer_vocab(self.refs))
        self._answer_index = {a: i for i, a in enumerate(self.answer_vocab or [])}
        self._teacher_classes = self._teacher_vocab_map()
        self.max_candidates = max(r.n_candidates for r in self.refs)
        self._store: FeatureStore | None = stores.store("cls")
        self._handles: dict[Any, Any] = {}

    def _teacher_vocab_map(self) -> np.ndarray | None:
        """Open-ended: teacher vocabulary index -> this dataset's answer class (-1: not a class),
        so the teacher's top-k probabilities land on the classes the head predicts."""
        if self.multiple_choice or "imageqa" not in self.stores.paths:
            return None
        vocab = self.stores.store("imageqa").teacher_vocab()
        if vocab is None:
            return None
        return np.array([self._answer_index.get(a, -1) for a in vocab], dtype=np.int64)

    # -- pickling for DataLoader workers: reopen lazily --------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_store"] = None
        state["_handles"] = {}
        return state

    @property
    def store(self) -> FeatureStore:
        """The store of the ``cls`` role (the primary unless overridden), reopened after pickling."""
        if self._store is None:
            self._store = self.stores.store("cls")
        return self._store

    def _video(self, role: str, video_id: str) -> tuple[dict[str, Any], np.ndarray]:
        """Readers of a video's feature arrays in ``role``'s store (:class:`RowReader`: one ``pread``
        per run of nearby rows), its ``pts`` (and ``patch_pts``) read once; kept per process."""
        key = (str(self.stores.paths[role]), "video", video_id)
        if key not in self._handles:
            arrays: dict[str, Any] = {}
            for name, array in self.stores.store(role).video_arrays(video_id).items():
                if name in ("pts", "patch_pts"):  # small, compressed: read once
                    arrays[name] = np.asarray(array[:])
                elif name not in ("src_index", "is_repeat"):  # (never read here)
                    arrays[name] = RowReader(array)
            self._handles[key] = (arrays, arrays["pts"])
        return self._handles[key]

    def _bundle(self, role: str, split_key: str, bundle_key: str) -> Any:
        key = (str(self.stores.paths[role]), split_key, bundle_key)
        if key not in self._handles:
            group = self.stores.store(role).root[f"questions/{split_key}/{bundle_key}"]
            self._handles[key] = {n: RowReader(a) for n, a in group.arrays()}
        return self._handles[key]

    def _entries(self, split_key: str, bundle_key: str) -> list[dict[str, Any]]:
        """The metadata entries of a question bundle in the text store (cached per process)."""
        key = (str(self.stores.paths["text"]), split_key, bundle_key, "entries")
        if key not in self._handles:
            self._handles[key] = list(self.stores.store("text").root[f"questions/{split_key}/{bundle_key}"].attrs["entries"])
        return self._handles[key]

    def __len__(self) -> int:
        return len(self.refs)

    def dims(self) -> dict[str, int]:
        """Widths a model needs: cls E, text E_t, patch P and W (0 without patches)."""
        sample = self[0]
        patch = sample.get("patch")
        return {
            "cls_dim": sample["cls"].shape[-1],
            "text_dim": sample["text"].shape[-1],
            "num_patches": 0 if patch is None else patch.shape[1],
            "patch_dim": 0 if patch is None else patch.shape[2],
            "num_answers": len(self.answer_vocab or []),
        }

    def _label(self, ref: QuestionRef) -> int:
        if ref.answer is None:
            return -1
        if self.multiple_choice:
            return int(ref.answer)
        return self._answer_index.get(str(ref.answer), -1)

    def _patch_frames(self, video_id: str, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(frames, patch rows): the ``cls`` store's frame rows (M,) that have patch tokens, and
        the row of each in the patch store's ``patch`` array (M,), or None when the patch store
        has patches on every frame (then every frame; rows matched by pts at read time, as
        always). With a ``--patch-fps`` sub-grid: the frames whose pts has a sub-grid frame
        (:func:`~vqacache.cache_spec.patch_frames.patch_frame_rows`) within the stores' pts
        tolerance."""
        key = (str(self.stores.paths["patch"]), "patch-frames", video_id)
        if key not in self._handles:
            arrays, patch_store_pts = self._video("patch", video_id)
            have = patch_frame_rows({"pts": patch_store_pts, "patch_pts": arrays.get("patch_pts")})  # (M,)
            if len(have) == len(patch_store_pts):
                entry: tuple[np.ndarray, np.ndarray | None] = (np.arange(len(pts), dtype=np.int64), None)
            elif self.stores.same("patch", "cls"):
                entry = (have, np.arange(len(have), dtype=np.int64))
            else:
                near, gap = nearest_frames(pts, patch_store_pts[have])
                matched = np.flatnonzero(gap <= PTS_TOLERANCE_S)  # cls rows near a sub-grid frame; repeats share one pts:
                rows, first = np.unique(near[matched], return_index=True)  # the first of them, as the writer
                entry = (matched[first], rows)
            self._handles[key] = entry
        return self._handles[key]

    def _candidate_frames(self, video_id: str, pts: np.ndarray) -> np.ndarray:
        """Rows of the ``cls`` store's frames a question may use: all of them, or, when the
        method reads patches, those that have patch tokens (a ``--patch-fps`` store)."""
        if self.patch_frames == "none":
            return np.arange(len(pts), dtype=np.int64)
        return self._patch_frames(video_id, pts)[0]

    def _patch(self, video_id: str, pts: np.ndarray, chosen: np.ndarray) -> Tensor:
        """Patch tokens (K, P, W) float32 of the ``cls`` store's frames ``chosen`` (frames that have patches)."""
        frames, patch_rows = self._patch_frames(video_id, pts)
        arrays, patch_store_pts = self._video("patch", video_id)
        if patch_rows is not None:  # a sub-grid: chosen is among ``frames``
            rows = patch_rows[np.searchsorted(frames, chosen)]
        elif self.stores.same("patch", "cls"):
            rows = chosen
        else:
            names = (f"cls store {self.stores.paths['cls'].name}", f"patch store {self.stores.paths['patch'].name}")
            rows = match_frames(pts[chosen], patch_store_pts, video_id, *names)
        return as_float32(arrays["patch"].rows(rows))  # one read per run of nearby rows

    def __getitem__(self, i: int) -> dict[str, Any]:
        ref = self.refs[i]
        arrays, pts = self._video("cls", ref.video_id)
        usable = self._candidate_frames(ref.video_id, pts)  # (M,) rows: all, or those with patches
        if self.patch_frames == "segments":
            inside = usable[frame_indices(pts[usable], len(usable), ref.start, ref.end)]  # the question's frames
            draws = torch.rand(self.num_frames).numpy() if self.training else None
            idx = inside[segment_positions(len(inside), self.num_frames, draws)]  # (T,)
        else:
            idx = usable[frame_indices(pts[usable], self.num_frames, ref.start, ref.end)]  # (n,)
        cls = as_float32(arrays["cls"].rows(idx))  # (n, E)
        group = self._bundle("text", ref.split_key, ref.bundle_key)
        if "text" in group or self.text == "vectors":
            text = as_float32(group["text"].rows(ref.row))  # (E,)
        else:  # a vision-only store's bundles (vitg) hold the questions' strings, no vectors
            text = torch.zeros(0, dtype=torch.float32)
        item: dict[str, Any] = {
            "index": i,
            "qid": ref.qid,
            "video_id": ref.video_id,
            "qtype": ref.qtype or "",
            "cls": cls,  # (n, E)
            "text": text,  # (E,)
            "answer": self._label(ref),
        }
        if self.text_tokens:  # (L, W) the question's own L token states
            n_tok = int(group["text_len"].rows(ref.row))
            item["text_tokens"] = as_float32(group["text_tokens"].rows(ref.row)[:n_tok])
        if ref.n_candidates and ("cand" in group or self.text == "vectors"):
            cand = group["cand"].rows(ref.row)[: ref.n_candidates]
            item["cand"] = as_float32(cand)  # (C, E)
        if self.text == "strings":
            entry = self._entries(ref.split_key, ref.bundle_key)[ref.row]
            item["question"] = str(entry.get("question", ""))
            item["candidates"] = [str(c) for c in entry.get("candidates") or ()]
        if self.patch_frames != "none":
            chosen = idx if self.patch_frames in ("all", "segments") else idx[
                uniform_positions(len(idx), self.num_patch_frames)]
            item["patch"] = self._patch(ref.video_id, pts, chosen)  # (n or K, P, W)
        if ref.teacher_key is not None:
            teacher = _teacher(self._bundle("imageqa", ref.split_key, ref.teacher_key), ref.teacher_row, pts[idx],
                               self._teacher_classes, len(self.answer_vocab or []))
            if teacher is not None:
                item["imageqa"] = torch.from_numpy(teacher)  # (n, C)
        return item


def as_float32(rows: np.ndarray) -> Tensor:
    """``rows`` as a float32 tensor, the values numpy's cast gives (bit for bit, except that a
    signalling NaN comes out quiet). float16 (the stores' dtype) is widened by torch, vectorised:
    ~0.03 ms for a NExT-QA sample's 100 CLS rows and 16 frames' patches against ~0.3-0.5 ms
    through numpy's float16 cast (measured here), the largest part of a worker's read; float32
    is wrapped without a copy."""
    rows = np.asarray(rows)
    if rows.dtype in (np.float16, np.float32) and rows.dtype.isnative and rows.flags.writeable:
        return torch.from_numpy(np.ascontiguousarray(rows)).float()
    return torch.from_numpy(np.asarray(rows, dtype=np.float32))


def _teacher(group: dict[str, Any], row: int, frame_pts: np.ndarray, classes: np.ndarray | None = None,
             num_classes: int = 0) -> np.ndarray | None:
    """The teacher's probabilities (n, C) at ``frame_pts``, or None when the bundle has none.

    Reads ``imageqa`` (Q, F, K) and ``imageqa_pts`` (Q, F) from the question bundle (rows of a
    question with fewer teacher frames are padded with NaN pts); each frame takes the teacher
    frame nearest in pts. Open-ended (``imageqa_index`` (Q, F, K) into the teacher's
    vocabulary): the top-k probabilities are scattered onto this dataset's ``num_classes``
    answer classes through ``classes`` (teacher index -> class, -1 dropped); the rest is 0.
    """
    if "imageqa" not in group or "imageqa_pts" not in group:
        return None
    probs = np.asarray(group["imageqa"][row], dtype=np.float32)  # (F, K)
    if "imageqa_index" in group:
        if classes is None:
            return None
        index = np.asarray(group["imageqa_index"][row], dtype=np.int64)  # (F, K)
        dense = np.zeros((probs.shape[0], num_classes), np.float32)  # (F, C)
        target = np.where(index >= 0, classes[np.clip(index, 0, None)], -1)
        f, j = np.nonzero(target >= 0)
        np.add.at(dense, (f, target[f, j]), probs[f, j])
        probs = dense
    tpts = np.asarray(group["imageqa_pts"][row], dtype=np.float64)  # (F,)
    valid = np.isfinite(tpts)
    probs, tpts = probs[valid], tpts[valid]
    if len(tpts) == 0:
        return None
    nearest = np.abs(frame_pts[:, None] - tpts[None, :]).argmin(axis=1)  # (n,)
    return probs[nearest]
