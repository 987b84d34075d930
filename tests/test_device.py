"""``--device`` / ``--compute-dtype`` resolution and the host <-> device copies (CPU side)."""

from __future__ import annotations

import pytest
import torch

from vqacache.cache_spec import UsageError
from vqacache.featurize.device import check_device_options, resolve_compute_dtype, resolve_device
from vqacache.featurize.encoders.transfer import to_device, to_host


def test_auto_is_cpu_and_float32_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    assert resolve_compute_dtype("auto", "cpu") == "float32"
    with pytest.raises(UsageError, match="sees no CUDA GPU"):
        resolve_device("cuda")


def test_auto_is_cuda_and_float16_with_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda"
    assert resolve_compute_dtype("auto", "cuda") == "float16"
    assert resolve_compute_dtype("auto", "cuda:1") == "float16"
    assert resolve_compute_dtype("bfloat16", "cuda") == "bfloat16"  # an explicit choice is kept


@pytest.mark.parametrize(("device", "dtype", "message"), [
    ("gpu", "auto", "--device must be auto, cpu, cuda or cuda:N, got 'gpu'"),
    ("cpu", "fp16", "--compute-dtype must be auto or one of float32, float16, bfloat16, got 'fp16'"),
])
def test_misspelt_options_are_one_clear_error(device, dtype, message):
    with pytest.raises(UsageError, match=message):
        check_device_options(device, dtype)


def test_cuda_spelling_is_accepted_on_a_client_without_a_gpu():
    check_device_options("cuda:1", "float16")  # the workers may have the GPUs


def test_cpu_copies_are_plain_conversions():
    x = torch.arange(6, dtype=torch.uint8).reshape(1, 2, 3)
    assert to_device(x, "cpu") is x
    out = to_host({"a": torch.ones(2, 3, dtype=torch.bfloat16), "b": torch.zeros(4)})
    assert out["a"].dtype == torch.float32 and out["a"].tolist() == [[1.0] * 3] * 2
    assert out["b"].dtype == torch.float32 and out["b"].shape == (4,)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_copies_round_trip_through_pinned_memory():
    x = torch.randint(0, 255, (4, 8, 8, 3), dtype=torch.uint8)
    y = to_device(x, "cuda")
    assert y.device.type == "cuda" and torch.equal(y.cpu(), x)
    out = to_host({"a": y.half() * 2, "b": y.float()})
    assert out["a"].is_pinned() and out["a"].dtype == torch.float32
    assert torch.equal(out["b"], x.float()) and torch.equal(out["a"], (x.half() * 2).float())
