"""What VideoDistill's patch tokens cost per training step: 196 (no pooling) vs 49 (``--patch-pool 2``)
vs 4 (``--patch-pool 7``) tokens a frame.

    uv run python benchmarks/patch_pool_cost.py [--tokens 196,49,4] [--batch-size 1] [--steps 2]

The paper's model (N = 100 dense frames, K = 16 selected, L = 3, 8 heads, D = 1024; VTM off:
the cosine head, so one pass per question) on random inputs shaped like a CLIP ViT-B/16 store
(CLS E = 512, patches W = 768, float32 once read). Per token count, on CPU:

* ``input_mib``: the batch's patch tensor (B x N x P x W x 4 bytes): what the loader reads
  (the straight-through mask needs all N frames' patches);
* ``saved_mib``: the bytes autograd saves for the backward pass during one forward (counted
  with ``torch.autograd.graph.saved_tensors_hooks``; device-independent, the activation memory
  a GPU would also hold, give or take the kernels' workspace);
* ``seconds_per_step``: forward + backward + AdamW step, the mean of ``--steps`` steps after a
  warm-up step (CPU; on a shared machine only the ratios between rows mean much).

Last line: JSON, one entry per token count.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from vqacache.heads.methods import get_method, method_args


def measure(tokens: int, a: argparse.Namespace) -> dict[str, float]:
    method = get_method("videodistill")
    args = method_args(method, {"mc_head": "cosine"})  # the paper's N, K, L, heads, D
    dims = {"cls_dim": 512, "text_dim": 512, "num_patches": tokens, "patch_dim": 768, "num_answers": 0}
    torch.manual_seed(0)
    model = method.build(args, dims)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    B, N, C = a.batch_size, args["num_frames"], 5
    batch = {"cls": torch.randn(B, N, 512), "patch": torch.randn(B, N, tokens, 768), "text": torch.randn(B, 512),
             "cand": torch.randn(B, C, 512), "cand_mask": torch.ones(B, C, dtype=torch.bool),
             "frame_mask": torch.ones(B, N, dtype=torch.bool), "answer": torch.zeros(B, dtype=torch.long)}
    saved = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[0] += t.numel() * t.element_size()
        return t

    def step(count: bool = False) -> None:
        if count:
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                loss, _ = method.loss(model, batch, args)
        else:
            loss, _ = method.loss(model, batch, args)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step(count=True)  # warm-up, counting what autograd saves
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    return {"tokens": tokens, "input_mib": batch["patch"].numel() * 4 / 2**20, "saved_mib": saved[0] / 2**20,
            "seconds_per_step": (time.perf_counter() - t0) / a.steps}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--tokens", default="196,49,4")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    rows = []
    for tokens in (int(t) for t in a.tokens.split(",")):
        row = measure(tokens, a)
        rows.append(row)
        print(f"{tokens:>4} tokens: input {row['input_mib']:8.1f} MiB  saved for backward {row['saved_mib']:8.1f} MiB  "
              f"{row['seconds_per_step']:7.2f} s/step (batch {a.batch_size}, CPU)", flush=True)
    print(json.dumps({"batch_size": a.batch_size, "threads": torch.get_num_threads(), "rows": rows}))


if __name__ == "__main__":
    main()
