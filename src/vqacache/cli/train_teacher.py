"""``vqa-train-teacher``: fine-tune the ALBEF image-QA teacher from cached ALBEF tokens (SpARC A.1,
A.4), then recompute every question's per-frame probabilities from the same cache.

    vqa-train-teacher --teacher albef --tokens STORE_albef.zarr --weights ALBEF_VQA.pth \\
        --out teacher/albef-ft.pth [--target STORE.zarr] [--epochs 5 --lr 2e-5 --weight-decay 0.01 --frames 16]

``--tokens``: an ``albef`` store featurized with unpooled patch tokens (``vqa-featurize
--encoder albef --patch-pool 1``), with the dataset's question bundles. Nothing is decoded: the
frames' ViT tokens come from it. ``--out``: the fine-tuned checkpoint, in ALBEF's key layout,
loadable with ``vqa-featurize --imageqa albef --imageqa-weights PATH``. ``--target``: the store
whose question bundles receive the recomputed probabilities under their own teacher spec
(default: the token store; a store that already holds a teacher's probabilities refuses
another). The run log in the target store counts the frames read from the cache and the frames
decoded (0). ``--weights random[:SEED]`` gives random weights (with the architecture's own
tokenizer, else a WordPiece tokenizer built from the store's own questions and answers, unless
``--tokenizer`` is given). ``--architecture``: the ALBEF architecture (default: the token
store's, e.g. ``albef-tiny`` for a store featurized with ``--encoder albef-tiny``); it is recorded
in the checkpoint, which ``--imageqa albef --imageqa-weights`` then builds with.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from vqacache.cache_spec import UsageError, open_store
from vqacache.cli._common import user_errors_exit

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

TEACHERS = ("albef",)


def store_architecture(store, given: str | None) -> str:
    """``--architecture`` if given, else the ALBEF architecture the token store's spec records
    (``albef:NAME``); one line naming the flag when it is not a known one."""
    from vqacache.featurize.encoders.albef import ARCHITECTURES

    name = given or store.spec.architecture.removeprefix("albef:")
    if name not in ARCHITECTURES:
        where = "--architecture" if given else f"--tokens {store.path} (architecture {store.spec.architecture!r})"
        raise UsageError(f"{where}: unknown ALBEF architecture {name!r}; known: {', '.join(ARCHITECTURES)}")
    return name


def store_texts(store) -> list[str]:
    """Every question, candidate and text answer in the store's bundles (for a built tokenizer)."""
    texts: list[str] = []
    splits = store.root["questions"] if "questions" in store.root else None
    for split_key, split in (splits.groups() if splits is not None else []):
        for _, group in split.groups():
            for e in group.attrs.get("entries", []):
                texts += [str(e.get("question", "")), *(str(c) for c in e.get("candidates") or [])]
                if not e.get("candidates") and e.get("answer") not in (None, ""):
                    texts.append(str(e["answer"]))
    return texts


@app.command(help="Fine-tune the image-QA teacher from cached tokens and recompute its probabilities.")
@user_errors_exit
def run(
    tokens: Annotated[Path, typer.Option(help="ALBEF token store (vqa-featurize --encoder albef --patch-pool 1).")],
    weights: Annotated[str, typer.Option(help="The teacher to fine-tune: ALBEF's VQA checkpoint, or random[:SEED].")],
    out: Annotated[Path, typer.Option(help="Where to write the fine-tuned checkpoint (ALBEF's key layout).")],
    teacher: Annotated[str, typer.Option(help="Image-QA teacher: albef.")] = "albef",
    target: Annotated[Path | None, typer.Option(help="Store receiving the recomputed probabilities "
                                                     "(default: --tokens).")] = None,
    tokenizer: Annotated[str | None, typer.Option(help="BERT tokenizer folder or vocab.txt (default: bert-base-uncased "
                                                       "from the HF cache; random weights: built from the store).")] = None,
    split: Annotated[str, typer.Option(help="Split to fine-tune on.")] = "train",
    splits: Annotated[str, typer.Option(help="Comma-separated splits whose probabilities are recomputed.")] = "train,val,test",
    epochs: Annotated[int, typer.Option(help="A.4: 5.")] = 5,
    lr: Annotated[float, typer.Option(help="A.4: 2e-5 (Adam).")] = 2e-5,
    weight_decay: Annotated[float, typer.Option(help="A.4: 0.01.")] = 0.01,
    frames: Annotated[int, typer.Option(help="Frames per question (A.4: 16 NExT-QA, 8 AGQA).")] = 16,
    batch_size: Annotated[int, typer.Option(help="(frame, question) pairs per step (this project's choice).")] = 32,
    k: Annotated[int, typer.Option(min=1, help="Open-ended: answers rescored in full per frame (ALBEF's k_test).")] = 128,
    architecture: Annotated[str | None, typer.Option(help="ALBEF architecture: albef-vqa or albef-tiny (default: "
                                                          "the token store's).")] = None,
    seed: int = 0,
    device: str = "cpu",
) -> None:
    from vqacache.featurize.encoders.albef import OWN_TOKENIZERS
    from vqacache.featurize.imageqa.albef import build_albef_teacher
    from vqacache.featurize.imageqa.cached import recompute_probabilities
    from vqacache.featurize.imageqa.dataset_tokenizer import build_dataset_tokenizer
    from vqacache.featurize.imageqa.finetune import FinetuneConfig, finetune, open_token_store, save_teacher_checkpoint

    if teacher not in TEACHERS:
        raise UsageError(f"--teacher {teacher!r}: valid: {', '.join(TEACHERS)}")
    config = FinetuneConfig(epochs=epochs, lr=lr, weight_decay=weight_decay, frames=frames, batch_size=batch_size,
                            seed=seed, split=split)
    config.check()
    token_store = open_token_store(tokens)
    model_name = store_architecture(token_store, architecture)
    if out.exists():
        raise UsageError(f"--out {out} exists; choose another path")
    built = None
    if tokenizer is None and weights.strip().startswith("random") and model_name not in OWN_TOKENIZERS:
        built = build_dataset_tokenizer(store_texts(token_store))
        typer.echo(f"random weights: WordPiece tokenizer built from the store's text ({len(built)} tokens)")
    base = build_albef_teacher(weights, device=device, compute_dtype="float32", k_test=k, model_name=model_name,
                               tokenizer=built if built is not None else tokenizer)
    report = finetune(base, token_store, config, log=typer.echo)
    meta = {"architecture": model_name, "base_weights": base.weights.spec.identity, "tokens_store": token_store.fingerprint,
            "losses": report["losses"], "questions": report["questions"], "config": report["config"],
            "tokenizer": (built.spec() if built is not None else None)}
    save_teacher_checkpoint(base.model, out, meta)
    typer.echo(f"fine-tuned teacher written to {out}")
    tuned = build_albef_teacher(str(out), device=device, compute_dtype="float32", k_test=k, model_name=model_name,
                                tokenizer=built if built is not None else tokenizer)
    dest = open_store(target or tokens, "a")
    record = recompute_probabilities(tuned, token_store, dest, [s for s in splits.split(",") if s], frames,
                                     {"finetune": meta})
    typer.echo(json.dumps({k: v for k, v in record.items() if k != "failed"} | {"failed": len(record["failed"])}))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
