"""The helpers of conftest.py: shared data that is missing skips a test, but fails it under
CI=true; network_attempts refuses and records every attempt to reach the network."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from conftest import need_shared


def test_missing_shared_data_fails_under_ci(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing = tmp_path / "shared" / "data" / "videos"
    for value in ("true", "TRUE", " True"):
        monkeypatch.setenv("CI", value)
        with pytest.raises(pytest.fail.Exception, match="needs the shared real data") as failed:
            need_shared(missing)
        assert str(missing) in str(failed.value) and "CI=true" in str(failed.value)


def test_missing_shared_data_skips_outside_ci(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="needs the shared real data") as skipped:
        need_shared(missing)
    assert str(missing) in str(skipped.value)
    for value in ("false", "0", ""):
        monkeypatch.setenv("CI", value)
        with pytest.raises(pytest.skip.Exception):
            need_shared(missing)


def test_present_shared_data_is_returned_in_and_out_of_ci(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for value in ("true", "false"):
        monkeypatch.setenv("CI", value)
        assert need_shared(tmp_path) == tmp_path


def test_network_attempts_are_refused_and_recorded(network_attempts: list[str]) -> None:
    assert network_attempts == []
    with pytest.raises(OSError):
        socket.create_connection(("huggingface.co", 443), timeout=1)
    with pytest.raises(OSError):
        socket.getaddrinfo("huggingface.co", 443)
    with socket.socket() as sock, pytest.raises(OSError):
        sock.connect(("127.0.0.1", 9))
    assert [a.split("(")[0] for a in network_attempts] == ["create_connection", "getaddrinfo", "socket.connect"]
