"""DecodePool: decoding in child processes gives exactly the in-process chunks, in input order;
hangs, crashes, broken files and abandoned streams fail one video only and leak nothing.

Children are fresh interpreters importing torch (several seconds on a slow machine), so the
tests share two pools: ``spawn_pool`` and ``fault_pool`` (a short timeout; it was the
"forkserver" pool, a start method now accepted for compatibility only). Both run the
misbehaving ``decode_pool_faults.decode``, which decodes real files with the real decoder.

No assertion here depends on how fast the machine is: where a test needs one thing to happen
before another, a fake video announces it with a file (see ``decode_pool_faults``) and the
test waits for that file (:func:`wait_until`); the only limits are failure paths.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections import Counter
from pathlib import Path

import decode_pool_faults
import numpy as np
import pytest

from vqacache.cache_spec.errors import UsageError
from vqacache.featurize.decode import DecodeError, iter_decode_at_fps
from vqacache.featurize.decode.pool import (
    DEFAULT_DECODE_FN,
    DecodePool,
    DecodePoolError,
    resolve_decode_fn,
)

FAULTS = "decode_pool_faults:decode"
SHM = Path("/dev/shm")
CHUNK = 32  # real videos here have 50..76 output frames: 2 or 3 chunks each


def run(pool: DecodePool, videos: list[tuple[str, object]]) -> list[tuple[str, list, DecodeError | None]]:
    """(video_id, chunks, error or None) per stream, reading every stream to its end."""
    out = []
    for stream in pool.imap(videos):
        chunks: list = []
        try:
            for chunk in stream.chunks():
                chunks.append(chunk)
        except DecodeError as e:
            out.append((stream.video_id, chunks, e))
        else:
            out.append((stream.video_id, chunks, None))
    return out


def wait_until(condition, what: str, limit_s: float = 60.0) -> None:  # noqa: ANN001
    """Poll ``condition()`` until it is true. The limit is a failure path only: reaching it
    means the awaited event never comes (on any machine, loaded or not, it comes long before)."""
    give_up = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < give_up, f"still waiting for {what} after {limit_s:g} s"
        time.sleep(0.005)


def announced_pid(path: Path) -> int:
    """The pid in an event file of ``decode_pool_faults`` (see its ``_announce``)."""
    return int(path.read_text())


def assert_same_chunks(got: list, expected: list) -> None:
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        for name in ("frames", "pts", "src_index", "is_repeat"):
            a, b = getattr(g, name), getattr(e, name)
            assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b), name
        assert g.info == e.info


def shm_blocks(prefix: str) -> list[str]:
    return sorted(n for n in os.listdir(SHM) if n.startswith(prefix)) if SHM.is_dir() else []


def assert_no_leak(pool: DecodePool) -> None:
    """The pool's blocks belong to its live children, at most max_chunks_in_flight each."""
    owners = Counter(name[len(pool.shm_prefix):].split("-")[0] for name in shm_blocks(pool.shm_prefix))
    assert set(owners) <= {str(pid) for pid in pool.pids}, owners
    assert max(owners.values(), default=0) <= pool.max_chunks_in_flight, owners


def assert_closed_clean(pool: DecodePool, pids: list[int]) -> None:
    assert shm_blocks(pool.shm_prefix) == []
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.fixture(scope="module")
def pools() -> tuple[DecodePool, DecodePool]:
    """Both pools, started together: the spawned children and the forkserver import torch at
    the same time (the forkserver pool's constructor waits for its server)."""
    spawned = DecodePool(2, chunk_frames=CHUNK, timeout_s=60, decode_fn=FAULTS)
    forked = DecodePool(2, chunk_frames=CHUNK, timeout_s=2, mp_context="forkserver", decode_fn=FAULTS)
    with spawned, forked:
        yield spawned, forked


@pytest.fixture
def spawn_pool(pools: tuple[DecodePool, DecodePool]) -> DecodePool:
    return pools[0]


@pytest.fixture
def fault_pool(pools: tuple[DecodePool, DecodePool]) -> DecodePool:
    pool = pools[1]
    run(pool, [(f"warm{i}", f"fake-1-{i}") for i in range(4)])  # both children ready
    return pool


def real_videos(folder: Path) -> list[tuple[str, Path]]:
    return [(p.stem, p) for p in sorted(folder.iterdir())]


# -- spawn ---------------------------------------------------------------------------------------


def test_wait_ready_returns_once_every_child_has_started(spawn_pool: DecodePool) -> None:
    assert spawn_pool.wait_ready() is True  # the first test: children just spawned (importing torch)
    assert all(w.ready for w in spawn_pool._workers) and len(spawn_pool.pids) == 2
    assert spawn_pool.wait_ready(timeout_s=0) is True  # and at once when they have


def test_matches_in_process_decoding_in_input_order(spawn_pool: DecodePool, shared_videos: Path) -> None:
    videos = real_videos(shared_videos)
    expected = [list(iter_decode_at_fps(path, chunk_frames=CHUNK)) for _, path in videos]
    results = run(spawn_pool, videos)
    assert [r[0] for r in results] == [v for v, _ in videos]
    for (_, chunks, error), reference in zip(results, expected, strict=True):
        assert error is None
        assert_same_chunks(chunks, reference)
    assert spawn_pool.stats.inline_chunks == 0
    assert_no_leak(spawn_pool)


def test_broken_inputs_fail_as_in_process(
    spawn_pool: DecodePool, shared_videos: Path, tmp_path: Path
) -> None:
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("this is not a video\n" * 100)
    good = real_videos(shared_videos)[1]
    videos = [("empty", tmp_path / "empty.mp4"), good, ("text", tmp_path / "text.mp4"),
              ("missing", tmp_path / "missing.mp4"), good]
    results = run(spawn_pool, videos)
    for (_, path), (_, chunks, error) in zip(videos, results, strict=True):
        if path == good[1]:
            assert error is None and len(chunks) >= 2
            continue
        with pytest.raises(DecodeError) as expected:
            next(iter_decode_at_fps(path))
        assert chunks == [] and type(error) is DecodeError
        assert (error.reason, str(error)) == (expected.value.reason, str(expected.value))
    assert [r[2].reason for r in results if r[2]] == ["unreadable", "unreadable", "missing"]


def test_error_after_a_chunk_keeps_the_chunk(spawn_pool: DecodePool, shared_videos: Path) -> None:
    good = real_videos(shared_videos)[0]
    (_, chunks, error), (_, after, after_error) = run(spawn_pool, [("r", "raise-r"), good])
    assert_same_chunks(chunks, [decode_pool_faults.fake_chunk("raise-r", 0)])
    assert (error.reason, str(error)) == ("decode-error", decode_pool_faults.RAISED_MESSAGE)
    assert after_error is None and len(after) >= 2


def test_abandoned_streams_do_not_wedge(spawn_pool: DecodePool, shared_videos: Path) -> None:
    videos = real_videos(shared_videos)
    reference = list(iter_decode_at_fps(videos[3][1], chunk_frames=CHUNK))
    streams = spawn_pool.imap(videos + [videos[3]])
    first = next(streams)
    for _ in first.chunks():
        break  # one chunk, then abandon
    next(streams)  # taken but never read
    third = next(streams)
    with pytest.raises(DecodePoolError):
        list(first.chunks())  # once only
    assert len(list(third.chunks())) >= 2
    next(streams)  # abandons the fourth midway: taken, not read
    last = next(streams)
    assert_same_chunks(list(last.chunks()), reference)
    assert next(streams, None) is None
    for stream in spawn_pool.imap(videos):  # leaving imap early abandons the prefetched ones
        next(stream.chunks())
        break
    assert_same_chunks(run(spawn_pool, [videos[3]])[0][1], reference)
    assert_no_leak(spawn_pool)


def test_crash_under_spawn_then_close(spawn_pool: DecodePool, shared_videos: Path) -> None:
    good = real_videos(shared_videos)[1]
    before = spawn_pool.stats.crashes
    (_, _, error), (_, after, after_error) = run(spawn_pool, [("s", "segv-s"), good])
    assert error.reason == "crashed" and "SIGSEGV" in str(error)
    assert after_error is None and len(after) >= 2  # decoded by the other child
    assert spawn_pool.stats.crashes == before + 1
    pids = spawn_pool.pids
    spawn_pool.close()  # the replacement may still be importing: killed all the same
    assert_closed_clean(spawn_pool, pids)
    with pytest.raises(DecodePoolError):
        spawn_pool.imap([good])


# -- faults (forkserver) ---------------------------------------------------------------------------


def test_hang_times_out_and_the_pool_goes_on(fault_pool: DecodePool) -> None:
    timeouts = fault_pool.stats.timeouts
    videos = [("h", "hang-h"), ("a", "fake-3-a"), ("s", "stall-s"), ("b", "fake-2-b")]
    t0 = time.monotonic()
    streams = fault_pool.imap(videos)  # lazy: nothing is sent before the first next()
    with pytest.raises(DecodeError) as hung:
        list(next(streams).chunks())
    assert hung.value.reason == "timeout"
    assert f"sent nothing for {fault_pool.timeout_s:g} s and was killed" in str(hung.value)
    # not killed early: its deadline counts from its video being sent, after t0 (a lower bound
    # only, which no load can break; how much later the kill comes depends on the machine)
    assert time.monotonic() - t0 >= fault_pool.timeout_s
    assert len(list(next(streams).chunks())) == 3
    stalled = []
    with pytest.raises(DecodeError) as stall:
        for chunk in next(streams).chunks():
            stalled.append(chunk)
    assert stall.value.reason == "timeout" and len(stalled) == 1  # the chunk before it came
    assert len(list(next(streams).chunks())) == 2
    assert next(streams, None) is None
    assert fault_pool.stats.timeouts == timeouts + 2
    assert_no_leak(fault_pool)


def test_crashing_children_are_replaced(fault_pool: DecodePool) -> None:
    restarts = fault_pool.stats.restarts
    videos = [("e", "exit-e"), ("a", "fake-2-a"), ("s", "segv-s"), ("b", "fake-1-b"), ("c", "fake-1-c")]
    results = run(fault_pool, videos)
    assert [(r[2].reason if r[2] else len(r[1])) for r in results] == ["crashed", 2, "crashed", 1, 1]
    assert "exit code 139" in str(results[0][2]) and "SIGSEGV" in str(results[2][2])
    assert fault_pool.stats.restarts == restarts + 2
    assert_no_leak(fault_pool)


def test_abandoning_a_hanging_video_does_not_wedge(
    fault_pool: DecodePool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    timeout_s, restarts, timeouts = fault_pool.timeout_s, fault_pool.stats.restarts, fault_pool.stats.timeouts
    # Part 1: moving on from a hung video does not wait for its child's timeout. The timeout
    # is made long for this part, so that a pool that waited would be caught by the child's
    # kill (restarts), not by the clock, and a slow machine cannot look like such a pool.
    monkeypatch.setattr(fault_pool, "timeout_s", 60.0)
    stall = tmp_path / "stall-s"
    streams = fault_pool.imap([("s", stall), ("a", "fake-2-a")])
    stalled = next(streams).chunks()
    next(stalled)
    # Keep the stream open until its child hangs for good: abandoning it earlier sends a
    # cancel that the child may still read, and then it never hangs (the old race).
    wait_until(Path(f"{stall}.stalled").exists, "the stall-s child to hang")
    hung = announced_pid(Path(f"{stall}.stalled"))
    assert len(list(next(streams).chunks())) == 2  # taking this stream abandoned stall-s
    assert next(streams, None) is None
    assert hung in fault_pool.pids and fault_pool.stats.restarts == restarts  # not waited for
    del stalled

    # Part 2: with the pool's own short timeout, the abandoned child is killed and replaced
    # while another video is being read. "drip" sends a chunk every 50 ms (so its own child
    # is never silent) until the test releases it, which it does once the hung child is gone:
    # the kill happens during this run whatever the machine's speed. The third video may be
    # queued behind the hung child: it then moves to the replacement.
    fault_pool.timeout_s = timeout_s
    drip = tmp_path / "drip-d"
    streams = fault_pool.imap([("d", drip), ("a", "fake-1-a"), ("b", "fake-1-b")])
    give_up = time.monotonic() + 60.0  # a failure path only: the kill is due in 2 s
    for _ in next(streams).chunks():
        if hung not in fault_pool.pids:  # killed and replaced: let the drip end
            Path(f"{drip}.release").touch()
        assert time.monotonic() < give_up, "the hung child was never killed"
    assert [len(list(stream.chunks())) for stream in streams] == [1, 1]
    assert fault_pool.stats.restarts == restarts + 1
    assert fault_pool.stats.timeouts == timeouts  # an abandoned video's timeout is nobody's error
    with pytest.raises(ProcessLookupError):
        os.kill(hung, 0)
    assert_no_leak(fault_pool)


def test_backpressure_bounds_chunks_in_flight(fault_pool: DecodePool, tmp_path: Path) -> None:
    video = tmp_path / "count-50"
    streams = fault_pool.imap([("c", video), ("a", "fake-1-a")])
    chunks = next(streams).chunks()
    next(chunks)
    # 1 taken (its block is handed back at once) + max_chunks_in_flight waiting in shared
    # memory + 1 waiting for a free block: the child gets that far, then must stop
    bound = 1 + fault_pool.max_chunks_in_flight + 1
    progress = Path(f"{video}.progress")

    def produced() -> int:
        return int(progress.read_text() or 0) if progress.exists() else 0

    wait_until(lambda: produced() >= bound, f"the child to produce {bound} chunks")
    # The child is now blocked: the count never moves again while nothing is read, so this
    # holds on any machine. The pause only gives a pool without backpressure time to show it.
    time.sleep(0.2)
    assert produced() == bound
    chunks.close()  # abandon the other 49
    assert len(list(next(streams).chunks())) == 1
    assert next(streams, None) is None
    assert_no_leak(fault_pool)


def test_prefetch_overlaps_decoding(fault_pool: DecodePool, tmp_path: Path) -> None:
    """Each "meet" video of a pair waits until the other one has started: the pair can only
    finish when both are decoded at the same time. Decoding one video at a time (no prefetch)
    would leave the first waiting until its child's timeout."""
    videos = [(f"v{i}", tmp_path / f"pair{i // 2}" / f"meet-2-{i}") for i in range(4)]
    for _, path in videos:
        path.parent.mkdir(exist_ok=True)
    results = run(fault_pool, videos)
    assert [(len(r[1]), r[2]) for r in results] == [(1, None)] * 4


def test_close_leaves_nothing(fault_pool: DecodePool) -> None:
    pids = fault_pool.pids
    fault_pool.close()
    fault_pool.close()
    assert_closed_clean(fault_pool, pids)


@pytest.mark.parametrize("transport", ["shm", "pipe"])
def test_growing_chunks_and_pipe_transport(transport: str) -> None:
    expected = list(decode_pool_faults.decode("grow-g"))
    with DecodePool(1, max_chunks_in_flight=1, mp_context="forkserver", decode_fn=FAULTS,
                    transport=transport) as pool:
        (_, chunks, error), = run(pool, [("g", "grow-g")])
        assert error is None
        assert_same_chunks(chunks, expected)
        assert pool.stats.inline_chunks == (3 if transport == "pipe" else 0)
        assert_no_leak(pool)
        pids = pool.pids
    assert_closed_clean(pool, pids)


# -- hosts -----------------------------------------------------------------------------------------


def _decode_in(queue, videos: list[tuple[str, str]]) -> None:  # noqa: ANN001
    """Run in a daemonic process: decode ``videos`` in a pool of its own, report what came out."""
    out = []
    try:
        with DecodePool(1, chunk_frames=CHUNK, decode_fn=FAULTS) as pool:
            for stream in pool.imap(videos):
                chunks, error = [], None
                try:
                    chunks.extend(stream.chunks())
                except Exception as e:  # noqa: BLE001 - reported to the test
                    error = (type(e).__name__, str(e).splitlines()[0])
                out.append((stream.video_id, len(chunks), error))
    finally:
        queue.put(out)


def test_a_daemonic_process_may_host_the_pool() -> None:
    """A Dask worker under its nanny is daemonic; multiprocessing children were refused there."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    videos = [("a", "fake-2-a"), ("s", "segv-s"), ("v", "value-v"), ("o", "odd-o"), ("b", "fake-1-b")]
    host = ctx.Process(target=_decode_in, args=(queue, videos), daemon=True)
    host.start()
    try:
        got = queue.get(timeout=300)  # a failure path only
    finally:
        host.join(60)
        if host.exitcode is None:
            host.kill()
    assert host.exitcode == 0
    message = decode_pool_faults.RAISED_MESSAGE
    assert [g[:2] for g in got] == [("a", 2), ("s", 0), ("v", 0), ("o", 0), ("b", 1)]
    assert got[0][2] is None and got[4][2] is None
    assert got[1][2][0] == "DecodeError" and "SIGSEGV" in got[1][2][1]
    assert got[2][2] == ("ValueError", message)  # a builtin exception comes back as itself
    # any other type as a RuntimeError that names it (nothing a child sends is unpickled)
    assert got[3][2][0] == "RuntimeError" and "decode_pool_faults.OddError: " + message in got[3][2][1]


# -- options ------------------------------------------------------------------------------------


def test_options_are_checked_before_any_child_starts() -> None:
    assert resolve_decode_fn(DEFAULT_DECODE_FN) is iter_decode_at_fps
    bad = [dict(processes=0), dict(fps="fast"), dict(fps=0), dict(short_side=0), dict(chunk_frames=0),
           dict(timeout_s=0), dict(prefetch_videos=-1), dict(max_chunks_in_flight=0),
           dict(mp_context="fork"), dict(transport="carrier pigeon"), dict(decode_fn="nope"),
           dict(decode_fn="decode_pool_faults:nope")]
    for options in bad:
        with pytest.raises(UsageError):
            DecodePool(**options)
