"""``vlap`` (VLAP, Wang et al.): Frame-Prompter -> InstructBLIP Q-Former per frame -> frozen
Flan-T5, with the QFormer-Distiller, trained from cached BLIP-2 ViT-g tokens.

Per question: T frames (``num_frames``, 32; 8 for How2QA), one in each of T equal parts of
the question's frames (random in training, the midpoints at evaluation: ``patch_frames=
"segments"``), each frame's N = 1 + P tokens (cached CLS + patches, (B, T, N, W)) through the
method's own **vision LayerNorm** (trainable, initialised from the checkpoint's
``vision_model.post_layernorm``; see "Vision LayerNorm" below), then by recipe:

* ``vlap`` (= ``prompter-distill``, Table 4's last row): the Frame-Prompter picks one frame of
  each of K = ``num_select`` segments (eq. 2-5, temperature 0.01^(step/total) in training,
  0.01 and no noise at evaluation); the student Q-Former reads the K frames (eq. 6) ->
  (B, 32 K, d) visual tokens for the LLM; the teacher reads all T frames -> (B, 32 T, d)
  without gradient; ``L = L_task + w_distill * MSE(D(student), teacher)`` (eq. 7, w = 0.01 as
  in the released configs).
* ``uniform``: K frames (the segments' middles at evaluation, random inside at training), no
  distiller: the BLIP-2 / InstructBLIP baseline.
* ``distill``: the K segments' middle frames of the T + the distiller.
* ``prompter``: the Frame-Prompter's K frames without the distiller (an ablation the paper's
  Table 4 does not list; the diagnostic's Prompter-4 arm).
* ``teacher``: all T frames through the Q-Former, task loss only; its checkpoint is the
  teacher of a later ``vlap`` run (``teacher_checkpoint=RUN/checkpoints/best.pt``).

``L_task``: the frozen LLM's cross-entropy of ``Option X`` after the prompt
(:mod:`~vqacache.heads.modules.frozen_llm`); prediction: the option letters' logits at the
letter's decoding step. The Q-Former reads the same prompt as the LLM (the released code's
``qa_input``), left-truncated to ``max_text_len`` tokens.

**Trainable**: the student Q-Former and its queries, the projection, the Prompter, the
decoder D, the vision LayerNorm. **Frozen**: the LLM (in eval mode; the loss still
back-propagates through it) and the teacher. Checkpoints leave the frozen parts out (they are
rebuilt from the recorded ``weights`` and ``teacher_checkpoint``, whose identities the
arguments hold: ``weights_identity``, ``teacher_identity``). ``llm_dtype=bfloat16`` keeps the
frozen LLM's weights in bfloat16 (Flan-T5-XL: 5.6 GB instead of 11; it is read in float32 and
cast after loading, so loading still peaks at the float32 size in host memory); the trained
parts stay float32 and the gradient reaches them through the bf16 LLM.

**Teacher** (``teacher=``): ``separate`` (default): its own frozen Q-Former, queries,
projection and vision LayerNorm, from ``teacher_checkpoint`` (a ``recipe=teacher`` run of the
same ``weights``) or, when none is given, the pretrained ones of ``weights`` (recorded in the
notes). ``shared`` reproduces the released code: the teacher pass runs the *student's*
Q-Former (as it trains) with frozen copies of the initial queries and projection, and the
student's vision LayerNorm, under ``no_grad``.

**Vision LayerNorm.** Stores describe their ViT-g tokens with a ``TokenNorm``
(``vqacache.cache_spec.token_norm``): affine-free (the trunk's output normalised) or affine
(an old store: some checkpoint's LayerNorm already applied, its gamma and beta recorded);
``VisionLayerNorm`` turns either into this checkpoint's LayerNorm output, exactly. A
checkpoint whose vision trunk digest differs from the store's ``trunk_sha256`` is refused;
when either is unknown (random weights, an older store) the check is skipped and the reason
kept in ``notes``. Tokens of an unrecorded LayerNorm (older stores, synthetic stores) are
refused with pretrained weights (``VisionLayerNorm``'s one line) and, with random weights,
get a trainable affine initialised to identity (noted); so do all tokens where that module is
not installed (exact for affine-free tokens, whose affine starts at gamma', beta').

Decisions where the paper and the released code differ, and which this follows: the softmax
over the frames of a segment (code); noise-free argmax at evaluation (paper;
``eval_noise=true`` for the code's); the temperature over this run's steps (paper; the code
divides by 50 epochs whatever the run's length); the separate frozen teacher (paper;
``teacher=shared`` for the code's); D's LayerNorm over the token axis (code; ``distill_norm=
channels`` for the other reading of Table 5). Warm-up is a fraction of the steps (the released
configs use 500 steps), then a cosine decay (AdamW lr 1e-5, weight decay 0.05).
``question_aware=true`` (this project's extension) feeds the question's sentence vector to the
Prompter's first layer. ``prompter_lr_scale`` (this project's extension, default 1 = the
paper's single learning rate) multiplies the Prompter's learning rate: the Prompter starts
from random weights while the rest starts pretrained, and the straight-through signal is weak
(docs/vlap.md, diagnostic). Multiple-choice datasets only.
"""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import torch
from torch import Tensor, nn

from vqacache.cache_spec.errors import SpecMismatch, UnknownName, UsageError
from vqacache.heads.data import store_texts
from vqacache.heads.methods.common import Method, TrainStep, zero_loss
from vqacache.heads.modules.blip2_family import DEFAULT_WEIGHTS, Blip2Parts, load_parts, resolve_folder
from vqacache.heads.modules.frame_prompter import TAU_END, FramePrompter, prompter_temperature
from vqacache.heads.modules.frame_qformer import FrameQFormer
from vqacache.heads.modules.frozen_llm import LETTERS, FrozenT5, build_prompt, target_text
from vqacache.heads.modules.qformer_distiller import QFormerDistiller
from vqacache.heads.modules.word_tokenizer import word_vocab

RECIPES = ("vlap", "uniform", "distill", "prompter", "prompter-distill", "teacher")
PROMPTER_RECIPES = ("vlap", "prompter", "prompter-distill")
DISTILL_RECIPES = ("vlap", "distill", "prompter-distill")
TEACHERS = ("separate", "shared")
LLM_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
"""``llm_dtype``: the frozen LLM's weights (bfloat16 halves Flan-T5-XL's 11 GB; the trained parts stay float32)."""
DEFAULTS: dict[str, Any] = {
    "recipe": "vlap", "num_frames": 32, "num_select": 4, "weights": DEFAULT_WEIGHTS, "size": "checkpoint",
    "weights_seed": 0, "w_distill": 0.01, "distill_norm": "tokens", "eval_noise": False, "question_aware": False,
    "teacher": "separate", "teacher_checkpoint": "", "max_text_len": 128, "max_prompt_len": 256,
    "llm_dtype": "float32", "prompter_lr_scale": 1.0,
}
OPTIM = {"lr": 1e-5, "weight_decay": 0.05, "warmup": 0.1, "schedule": "cosine"}
FROZEN = ("llm.", "teacher.")
"""State-dict prefixes left out of checkpoints (rebuilt from their recorded identities)."""


def _check_args(args: dict[str, Any]) -> None:
    if args["recipe"] not in RECIPES:
        raise UnknownName(f"unknown vlap recipe {args['recipe']!r}; valid: {', '.join(RECIPES)}")
    if args["teacher"] not in TEACHERS:
        raise UnknownName(f"unknown vlap teacher {args['teacher']!r}; valid: {', '.join(TEACHERS)}")
    if args.get("llm_dtype", "float32") not in LLM_DTYPES:
        raise UnknownName(f"unknown vlap llm_dtype {args['llm_dtype']!r}; valid: {', '.join(LLM_DTYPES)}")
    if not float(args.get("prompter_lr_scale", 1.0)) > 0:
        raise UsageError(f"prompter_lr_scale must be positive, got {args['prompter_lr_scale']}")
    if args["recipe"] != "uniform" and args["num_frames"] % args["num_select"]:
        raise UsageError(f"num_frames ({args['num_frames']}) must be a multiple of num_select ({args['num_select']})")


# -- prepare: what the stores tell the model ---------------------------------------------------


def _token_norm(stores: Any) -> dict[str, Any] | None:
    """The patch store's TokenNorm as plain data, or None when the package cannot describe it."""
    try:
        from vqacache.cache_spec.token_norm import token_norm_of
    except ImportError:
        return None
    tn = token_norm_of(stores.store("patch"))
    as_list = lambda a: None if a is None else [float(v) for v in a]  # noqa: E731
    return {"kind": tn.kind, "gamma": as_list(tn.gamma), "beta": as_list(tn.beta), "eps": tn.eps,
            "trunk_sha256": tn.trunk_sha256}


def prepare(args: dict[str, Any], stores: Any) -> dict[str, Any]:
    """Identities, the store's token normalisation and (random weights) the word vocabulary."""
    _check_args(args)
    notes: list[str] = []
    extra: dict[str, Any] = {"store_token_norm": _token_norm(stores)}
    if args["weights"] == "random":
        extra["weights_identity"] = f"random:{args['weights_seed']}"
        prompt_words = [build_prompt("", []), *(target_text(i) for i in range(len(LETTERS)))]
        extra["vocab"] = word_vocab([*store_texts(stores), *prompt_words])
        notes.append("vision trunk check skipped: random weights")
    else:
        extra["weights_identity"] = resolve_folder(args["weights"])[1]
        extra["vocab"] = None
    if args["weights"] == "random" and _unknown_affine(extra["store_token_norm"]):
        notes.append("vision LayerNorm: the store's tokens are some LayerNorm's output (gamma unrecorded) and the "
                     "weights are random: a trainable affine initialised to identity on them")
    elif extra["store_token_norm"] is None or not _has_vision_layernorm():
        notes.append("vision LayerNorm: VisionLayerNorm not available, a trainable affine on the stored tokens "
                     "(exact for affine-free tokens; identity-initialised on tokens taken as the checkpoint's LN output)")
    if extra["store_token_norm"] is not None and extra["store_token_norm"]["trunk_sha256"] is None:
        notes.append("vision trunk check skipped: the store records no trunk digest")
    if args["recipe"] in DISTILL_RECIPES and args["teacher"] == "separate":
        if args["teacher_checkpoint"]:
            extra["teacher_identity"] = _teacher_identity(args["teacher_checkpoint"])
        else:
            extra["teacher_identity"] = extra["weights_identity"]
            notes.append("teacher: the pretrained Q-Former of the weights (no teacher_checkpoint given)")
    extra["notes"] = notes
    return extra


def _teacher_identity(path: str) -> str:
    """``sha256:<hex>`` of a teacher checkpoint file."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise UsageError(f"teacher_checkpoint {path}: {exc.strerror or type(exc).__name__}") from None
    return "sha256:" + digest.hexdigest()


# -- the model -----------------------------------------------------------------------------------


class _AffineOnStored(nn.Module):
    """Fallback vision LayerNorm (only where ``VisionLayerNorm`` is not installed): a trainable
    ``a * x + b`` on the stored tokens, a = gamma', b = beta' for affine-free tokens (then exact),
    a = 1, b = 0 otherwise (tokens taken to be the checkpoint's own LayerNorm output)."""

    def __init__(self, weight: Tensor, bias: Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone().float())
        self.bias = nn.Parameter(bias.detach().clone().float())

    def forward(self, tokens: Tensor) -> Tensor:
        return tokens * self.weight + self.bias


def _has_vision_layernorm() -> bool:
    try:
        from vqacache.heads.modules.vision_layernorm import VisionLayerNorm  # noqa: F401
    except ImportError:
        return False
    return True


def _unknown_affine(stored: dict[str, Any] | None) -> bool:
    return stored is not None and stored["kind"] == "affine" and stored["gamma"] is None


def _vision_ln(stored: dict[str, Any] | None, parts: Blip2Parts, width: int, random: bool) -> nn.Module:
    """The trainable vision LayerNorm over the stored tokens (see the module docstring)."""
    if stored is None or not _has_vision_layernorm() or (random and _unknown_affine(stored)):
        if stored is not None and stored["kind"] == "affine-free":
            return _AffineOnStored(parts.vision_gamma, parts.vision_beta)
        return _AffineOnStored(torch.ones(width), torch.zeros(width))
    import numpy as np

    from vqacache.cache_spec.token_norm import TokenNorm
    from vqacache.heads.modules.vision_layernorm import VisionLayerNorm

    arr = lambda v: None if v is None else np.asarray(v, dtype=np.float32)  # noqa: E731
    tn = TokenNorm(kind=stored["kind"], gamma=arr(stored["gamma"]), beta=arr(stored["beta"]), eps=stored["eps"],
                   trunk_sha256=stored["trunk_sha256"])
    return VisionLayerNorm(tn, parts.vision_gamma.clone(), parts.vision_beta.clone())


class VlapModel(nn.Module):
    """Batch (``cls`` (B, T, W), ``patch`` (B, T, P, W), ``text`` (B, E), ``question``,
    ``candidates``) -> student visual tokens (B, 32 K, d) (and the teacher's (B, 32 T, d))."""

    def __init__(self, args: dict[str, Any], dims: dict[str, int]) -> None:
        super().__init__()
        _check_args(args)
        if dims["num_answers"] > 0:
            raise UsageError("vlap answers multiple-choice questions only (its LLM picks an option letter)")
        if dims["cls_dim"] != dims["patch_dim"]:
            raise UsageError(f"vlap reads CLS and patch tokens of one ViT (widths {dims['cls_dim']} and "
                             f"{dims['patch_dim']} differ)")
        self.recipe = args["recipe"]
        self.prompter_lr_scale = float(args.get("prompter_lr_scale", 1.0))
        width = dims["patch_dim"]
        parts = load_parts(args["weights"], size=args["size"], vision_width=width, vocab=args.get("vocab"),
                           seed=args["weights_seed"])
        if parts.identity != args["weights_identity"]:
            raise SpecMismatch(f"weights {args['weights']} are now {parts.identity}, the run recorded "
                               f"{args['weights_identity']}")
        qwidth = parts.qformer.config.encoder_hidden_size
        if qwidth != width:
            raise UsageError(f"the Q-Former reads {qwidth}-wide vision tokens, the store's are {width}-wide")
        stored = args.get("store_token_norm")
        store_trunk = stored.get("trunk_sha256") if stored else None
        if parts.trunk_sha256 and store_trunk and parts.trunk_sha256 != store_trunk:
            raise SpecMismatch(
                f"the checkpoint {parts.identity}'s vision trunk ({parts.trunk_sha256[:12]}) is not the one that "
                f"featurized the store ({store_trunk[:12]}); its Q-Former would read tokens of another encoder")
        self.K, self.T = args["num_select"], args["num_frames"]
        self.qformer_tokenizer = parts.qformer_tokenizer
        self.max_text_len = args["max_text_len"]
        self.vision_ln = _vision_ln(stored, parts, width, random=args["weights"] == "random")
        self.student = FrameQFormer(parts.qformer, parts.query_tokens, parts.projection)
        self.llm = FrozenT5(parts.llm.to(LLM_DTYPES[args.get("llm_dtype", "float32")]), parts.llm_tokenizer,
                            args["max_prompt_len"])
        n_tokens = 1 + dims["num_patches"]
        self.prompter = None
        if args["question_aware"] and not dims["text_dim"]:
            raise UsageError("question_aware needs the questions' sentence vectors; this text store has none (a "
                             "vision-only store): take the text from a CLIP store of the dataset (--store text=PATH)")
        if self.recipe in PROMPTER_RECIPES:
            self.prompter = FramePrompter(self.T, self.K, n_tokens, dims["text_dim"] if args["question_aware"] else 0,
                                          args["eval_noise"])
        self.distiller = self.teacher = self.teacher_ln = None
        self.shared_teacher = args["teacher"] == "shared"
        if self.recipe in DISTILL_RECIPES:
            Q, d = self.student.num_queries, self.llm.width
            self.distiller = QFormerDistiller(Q * self.K, Q * self.T, d, args["distill_norm"])
            self.teacher = self._build_teacher(args, parts)
        self._register_state_dict_hook(_drop_frozen)
        self.register_load_state_dict_post_hook(_allow_missing_frozen)

    def _build_teacher(self, args: dict[str, Any], parts: Blip2Parts) -> nn.Module:
        if self.shared_teacher:  # released code: the student's Q-Former, frozen copies of queries and projection
            teacher = nn.Module()
            teacher.query_tokens = nn.Parameter(self.student.query_tokens.detach().clone(), requires_grad=False)
            teacher.projection = copy.deepcopy(self.student.projection).requires_grad_(False)
            return teacher
        teacher = nn.Module()
        teacher.ln = copy.deepcopy(self.vision_ln)
        teacher.qformer = copy.deepcopy(self.student)
        if args["teacher_checkpoint"]:
            _load_teacher(teacher, args)
        teacher.requires_grad_(False)
        teacher.eval()
        return teacher

    def lr_scale(self, name: str) -> float:
        """The learning-rate multiplier of parameter ``name`` (``prompter_lr_scale`` for the
        Prompter's, this project's extension; 1 elsewhere and in the paper)."""
        return self.prompter_lr_scale if name.startswith("prompter.") else 1.0

    def train(self, mode: bool = True) -> VlapModel:  # the teacher stays in eval mode (frozen)
        super().train(mode)
        if self.teacher is not None and not self.shared_teacher:
            self.teacher.eval()
        return self

    def tokens(self, batch: dict[str, Any]) -> Tensor:
        """cls (B, T, W) + patch (B, T, P, W) -> (B, T, 1 + P, W)."""
        return torch.cat([batch["cls"][:, :, None], batch["patch"]], dim=2)

    def text(self, batch: dict[str, Any]) -> tuple[list[str], Tensor, Tensor]:
        prompts = [build_prompt(q, c) for q, c in zip(batch["question"], batch["candidates"], strict=True)]
        tok = self.qformer_tokenizer(prompts, padding="longest", truncation=True, max_length=self.max_text_len,
                                     return_tensors="pt").to(batch["cls"].device)
        return prompts, tok["input_ids"], tok["attention_mask"]

    def student_frames(self, x: Tensor, batch: dict[str, Any], tau: float) -> tuple[Tensor, Tensor]:
        """Normalised tokens (B, T, N, W) -> the student's frames (B, K', N, W), their indices (B, K')."""
        B, T = x.shape[:2]
        if self.recipe in ("uniform", "teacher"):  # the data already holds the K (or T) frames
            return x, torch.arange(T, device=x.device).expand(B, T)
        if self.prompter is not None:
            out = self.prompter(x, tau, batch["text"] if self.prompter.question_dim else None)
            return out.frames, out.index
        middle = torch.arange(self.K, device=x.device) * (T // self.K) + (T // self.K) // 2  # (K,) segment middles
        return x[:, middle], middle.expand(B, self.K)

    def forward(self, batch: dict[str, Any], tau: float = TAU_END, with_teacher: bool = True) -> dict[str, Any]:
        x = self.vision_ln(self.tokens(batch))  # (B, T, N, W)
        prompts, ids, mask = self.text(batch)
        frames, index = self.student_frames(x, batch, tau)
        out: dict[str, Any] = {"prompts": prompts, "index": index, "student": self.student(frames, ids, mask)}
        if with_teacher and self.teacher is not None:
            with torch.no_grad():
                out["teacher"] = self._teacher(batch, x, ids, mask)  # (B, 32 T, d)
        return out

    def _teacher(self, batch: dict[str, Any], x: Tensor, ids: Tensor, mask: Tensor) -> Tensor:
        assert self.teacher is not None
        if self.shared_teacher:  # the student's Q-Former with the teacher's queries and projection
            return self.student(x, ids, mask, queries=self.teacher.query_tokens, projection=self.teacher.projection)
        tx = self.teacher.ln(self.tokens(batch))  # the teacher's own vision LayerNorm
        return self.teacher.qformer(tx, ids, mask)


def _drop_frozen(module: nn.Module, state: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    for key in [k for k in state if k[len(prefix):].startswith(FROZEN)]:
        del state[key]


def _allow_missing_frozen(module: nn.Module, incompatible: Any) -> None:
    for key in [k for k in incompatible.missing_keys if k.startswith(FROZEN)]:
        incompatible.missing_keys.remove(key)


def _load_teacher(teacher: nn.Module, args: dict[str, Any]) -> None:
    """A ``recipe=teacher`` vlap checkpoint's vision LayerNorm and Q-Former into ``teacher``."""
    path = args["teacher_checkpoint"]
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UsageError(f"teacher_checkpoint {path}: not a checkpoint that loads safely ({type(exc).__name__})") from None
    margs = ckpt.get("model_args", {}) if isinstance(ckpt, dict) else {}
    if ckpt.get("method") != "vlap" or margs.get("recipe") != "teacher":
        raise UsageError(f"teacher_checkpoint {path} is not a vlap recipe=teacher run's checkpoint")
    if margs.get("weights_identity") != args["weights_identity"]:
        raise SpecMismatch(f"teacher_checkpoint {path} was trained from {margs.get('weights_identity')}, this run "
                           f"uses {args['weights_identity']}")
    if _teacher_identity(path) != args.get("teacher_identity"):
        raise SpecMismatch(f"teacher_checkpoint {path} changed since the run started")
    state = ckpt["model"]
    teacher.ln.load_state_dict({k[len("vision_ln."):]: v for k, v in state.items() if k.startswith("vision_ln.")})
    teacher.qformer.load_state_dict({k[len("student."):]: v for k, v in state.items() if k.startswith("student.")})


# -- the method ----------------------------------------------------------------------------------


def _labelled(batch: dict[str, Any]) -> dict[str, Any]:
    keep = batch["answer"] >= 0
    rows = keep.nonzero().squeeze(1).tolist()
    out = {}
    for k, v in batch.items():
        if isinstance(v, Tensor) and v.shape[:1] == keep.shape:
            out[k] = v[keep]
        elif isinstance(v, list) and len(v) == len(keep):
            out[k] = [v[i] for i in rows]
        else:
            out[k] = v
    return out


def loss(model: nn.Module, batch: dict[str, Any], args: dict[str, Any]) -> tuple[Tensor, dict[str, float]]:
    """``L_task + w_distill * L_distill`` (the distiller's recipes) or ``L_task``."""
    if not bool((batch["answer"] >= 0).any()):
        return zero_loss(model), {"loss": 0.0, "l_task": 0.0, "l_distill": 0.0, "tau": 0.0}
    batch = _labelled(batch)
    step: TrainStep | None = batch.get("train_step")
    tau = prompter_temperature(step.step, step.total) if step is not None else TAU_END
    out = model(batch, tau)
    l_task = model.llm.loss(out["student"], out["prompts"], batch["answer"].tolist())
    total, l_distill = l_task, torch.zeros(())
    if model.distiller is not None:
        l_distill = model.distiller(out["student"], out["teacher"])  # eq. 7
        total = l_task + args["w_distill"] * l_distill
    return total, {"loss": float(total.detach()), "l_task": float(l_task.detach()),
                   "l_distill": float(l_distill.detach()), "tau": tau}


def predict(model: nn.Module, batch: dict[str, Any]) -> Tensor:
    """(B, C) option-letter logits (``-inf`` beyond each question's candidates)."""
    out = model(batch, TAU_END, with_teacher=False)
    return model.llm.option_logits(out["student"], out["prompts"], [len(c) for c in batch["candidates"]])


def data(args: dict[str, Any]) -> dict[str, Any]:
    _check_args(args)
    frames = args["num_select"] if args["recipe"] == "uniform" else args["num_frames"]
    return {"num_frames": frames, "patch_frames": "segments", "text": "strings"}  # it tokenizes the strings


METHOD = Method(
    name="vlap", build=VlapModel, loss=loss, predict=predict, data=data, defaults=DEFAULTS, optim=OPTIM,
    prepare=prepare,
)
