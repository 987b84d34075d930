"""The frozen Flan-T5 of VLAP / InstructBLIP: multiple-choice prompt, LM loss, option scores.

Prompt (VLAP's, from the released NExT-QA/STAR data processing)::

    Question: {q} Option A: {a0} Option B: {a1} ... Considering the information presented in
    the frame, select the correct answer from the options.

Target ``Option X`` (X the correct candidate's letter). The visual tokens (B, V, d) are put
before the prompt's token embeddings in the encoder's input.

* Task loss: the LM cross-entropy of the target (transformers' ``labels``, mean over the
  target tokens of the batch).
* Prediction: the logits of the option letters' tokens at the decoding step that produces the
  letter, restricted to the question's real candidates (``-inf`` beyond). The released code
  reads ``generate(...).scores[1]`` (beam search, the step after "Option") at the ids of
  "A".."E"; we run the decoder once, teacher-forced on the targets' common prefix
  (``Option``), and read the step after it: the same distribution without beam-search
  bookkeeping, for any number of options. The letter step and ids come from the tokenizer
  (:func:`letter_step`), so any T5-family tokenizer works.

The module never updates the LLM: its parameters are frozen and :meth:`train` keeps it in
eval mode (no dropout), but gradients flow through it to the visual tokens.
"""

from __future__ import annotations

import string
from typing import Any

import torch
from torch import Tensor, nn

from vqacache.cache_spec.errors import UsageError

LETTERS = string.ascii_uppercase
INSTRUCTION = "Considering the information presented in the frame, select the correct answer from the options."


def build_prompt(question: str, candidates: list[str] | tuple[str, ...]) -> str:
    """The multiple-choice prompt of one question (see the module docstring)."""
    options = " ".join(f"Option {LETTERS[i]}: {c}" for i, c in enumerate(candidates))
    return f"Question: {question} {options} {INSTRUCTION}"


def target_text(answer: int) -> str:
    """``Option X`` for the answer index."""
    return f"Option {LETTERS[answer]}"


def letter_step(tokenizer: Any, n_letters: int = len(LETTERS)) -> tuple[list[int], list[int]]:
    """(common prefix ids of the targets ``Option A``.. , the letter ids at the step after it).

    Raises :class:`UsageError` when the tokenizer does not give the targets one distinct token
    each at that step (the letters could not be scored from one step)."""
    targets = [tokenizer(target_text(i), add_special_tokens=False)["input_ids"] for i in range(n_letters)]
    prefix: list[int] = []
    for ids in zip(*targets):
        if len(set(ids)) > 1:
            break
        prefix.append(ids[0])
    p = len(prefix)
    letters = [t[p] if len(t) > p else -1 for t in targets]
    if -1 in letters or len(set(letters)) != n_letters:
        raise UsageError("the LLM's tokenizer does not give each option letter A-Z its own token after 'Option'")
    return prefix, letters


class FrozenT5(nn.Module):
    """A frozen encoder-decoder LM reading visual tokens + a prompt.

    Args:
        llm: a ``T5ForConditionalGeneration`` (frozen here).
        tokenizer: its tokenizer (callable, ``pad_token_id``).
        max_len: prompt tokens kept (truncated on the left, as the released code's tokenizer).
    """

    def __init__(self, llm: nn.Module, tokenizer: Any, max_len: int = 256) -> None:
        super().__init__()
        self.llm = llm
        self.tokenizer = tokenizer
        self.max_len = max_len
        for p in self.llm.parameters():
            p.requires_grad_(False)
        self.llm.eval()
        self.prefix, self.letter_ids = letter_step(tokenizer)

    def train(self, mode: bool = True) -> FrozenT5:  # the LLM stays in eval mode
        super().train(mode)
        self.llm.eval()
        return self

    @property
    def width(self) -> int:
        return int(self.llm.config.d_model)

    def _encoder_inputs(self, visual: Tensor, prompts: list[str]) -> tuple[Tensor, Tensor]:
        """visual (B, V, d), prompts -> inputs_embeds (B, V + L, d), attention_mask (B, V + L)."""
        tok = self.tokenizer(prompts, padding="longest", truncation=True, max_length=self.max_len,
                             return_tensors="pt").to(visual.device)
        text = self.llm.get_input_embeddings()(tok["input_ids"])  # (B, L, d)
        embeds = torch.cat([visual.to(text.dtype), text], dim=1)
        mask = torch.cat([tok["attention_mask"].new_ones(visual.shape[:2]), tok["attention_mask"]], dim=1)
        return embeds, mask

    def loss(self, visual: Tensor, prompts: list[str], answers: list[int]) -> Tensor:
        """The LM cross-entropy of ``Option X`` for each row (mean over target tokens) -> ()."""
        embeds, mask = self._encoder_inputs(visual, prompts)
        out = self.tokenizer([target_text(a) for a in answers], padding="longest", return_tensors="pt").to(visual.device)
        labels = out["input_ids"].masked_fill(out["attention_mask"] == 0, -100)  # (B, Lt)
        return self.llm(inputs_embeds=embeds, attention_mask=mask, decoder_attention_mask=out["attention_mask"],
                        labels=labels).loss

    def option_logits(self, visual: Tensor, prompts: list[str], n_options: list[int]) -> Tensor:
        """(B, C) logits of the letters A.. at the letter step; ``-inf`` beyond row b's ``n_options[b]``."""
        embeds, mask = self._encoder_inputs(visual, prompts)
        B, C = len(prompts), max(n_options)
        start = self.llm.config.decoder_start_token_id
        dec = torch.tensor([[start, *self.prefix]] * B, device=visual.device)  # (B, 1 + P)
        logits = self.llm(inputs_embeds=embeds, attention_mask=mask, decoder_input_ids=dec).logits[:, -1]  # (B, V)
        scores = logits[:, self.letter_ids[:C]].float()  # (B, C)
        real = torch.arange(C, device=visual.device)[None, :] < torch.tensor(n_options, device=visual.device)[:, None]
        return scores.masked_fill(~real, float("-inf"))
