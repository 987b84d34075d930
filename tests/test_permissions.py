"""Several Unix users share one cache root: one member starts a store, another appends to it,
verifies it and gc's it; someone outside the group gets one line naming the path and its owner.

Needs root (to create the users and group; CI runs as root); skips with the reason otherwise.
Each user's work runs in a forked child that drops to that user (setgroups/setgid/setuid) with
its own umask, so nothing outside this process's memory needs to be readable by them.

Mutations tried (each makes a test here fail):
1. ``apply_umask`` forcing 022 whatever ``--umask`` says -> test_umask_option;
2. ``check_writable`` that never raises -> test_outsider_gets_one_line (the error is a raw
   zarr/OS error, not the one naming the owner);
3. ``parse_umask`` reading decimal -> test_umask_option.
(Lease files created with a fixed 0o644 in ``_create_exclusive`` survives: that path runs only
on filesystems without hard links; lease files are published by ``os.link`` here.)
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from spec_factory import make_spec  # noqa: E402

from vqacache.cache_spec import open_store, verify_store  # noqa: E402
from vqacache.cache_spec.gc import apply_gc, plan_gc  # noqa: E402
from vqacache.cache_spec.permissions import parse_umask  # noqa: E402
from vqacache.cli.cache import app  # noqa: E402

NEEDS_ROOT = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("useradd") is None or shutil.which("groupadd") is None,
    reason="creating a second Unix user needs root and useradd/groupadd (CI runs as root)",
)


def _frames(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return dict(cls=rng.standard_normal((n, 8)), cls_hidden=rng.standard_normal((n, 8)), pts=np.arange(n) / 7.5,
                src_index=np.arange(n), is_repeat=np.zeros(n, bool))


@pytest.fixture
def lab(tmp_path):
    tag = f"{os.getpid() % 100000}"
    group, a, b, x = f"vqalab{tag}", f"vqaa{tag}", f"vqab{tag}", f"vqax{tag}"
    made: list[tuple[str, str]] = []
    base = Path(tempfile.mkdtemp(prefix="vqacache-lab-"))  # not under pytest's 0700 folder
    try:
        subprocess.run(["groupadd", group], check=True, capture_output=True)
        made.append(("groupdel", group))
        for user, primary in ((a, group), (b, group), (x, None)):
            args = ["useradd", "-M", "-N", "-d", "/nonexistent", "-s", "/usr/sbin/nologin"]
            subprocess.run([*args, *(["-g", primary] if primary else []), user], check=True, capture_output=True)
            made.insert(0, ("userdel", user))
        os.chmod(base, 0o755)
        root = base / "cache"
        root.mkdir()
        os.chown(root, 0, pwd.getpwnam(a).pw_gid)
        os.chmod(root, 0o2775)  # the lab's root: setgid, group-writable
        # warm every import and lazy codec in this process before forking
        warm = open_store(tmp_path / "warm.zarr", "a", spec=make_spec(patches=False), dataset="toy")
        with warm.write_video("w") as w:
            w.append(**_frames(4, 0))
        verify_store(warm)
        CliRunner().invoke(app, ["verify", str(warm.path)])  # the CLI's lazy imports too (stdlib may be unreadable to them)
        yield {"root": root, "group": group, "a": a, "b": b, "x": x}
    finally:
        shutil.rmtree(base, ignore_errors=True)
        for cmd, name in made:
            subprocess.run([cmd, name], capture_output=True)


def _as_user(name: str, umask: int, fn, *args):
    """Run ``fn(*args)`` in a forked child as user ``name`` with ``umask``; its JSON result."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(read)
            pw = pwd.getpwnam(name)
            os.setgroups([pw.pw_gid])
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)
            os.umask(umask)
            out = {"ok": True, "value": fn(*args)}
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            out = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        with os.fdopen(write, "w") as f:
            f.write(json.dumps(out))
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        data = f.read()
    os.waitpid(pid, 0)
    return json.loads(data)


def _start(path: str) -> int:
    store = open_store(path, "a", spec=make_spec(patches=False), dataset="toy")
    lease = store.claim("v1", "run-a", ttl_s=60)
    with store.write_video("v1", lease=lease) as w:
        w.append(**_frames(12, 1))
    lease.release()
    store.record_failure("v3", "DecodeError", "failed for a")
    store.write_run_log("run-a", {"finished": "2099-01-01T00:00:00+00:00"})
    return len(store.complete_videos())


def _append(path: str) -> dict:
    store = open_store(path, "a")
    for vid in ("v2", "v3"):  # v3: clears a's failure record (a group a created)
        lease = store.claim(vid, "run-b", ttl_s=60)
        with store.write_video(vid, lease=lease) as w:
            w.append(**_frames(10, 2))
        lease.release()
    report = verify_store(store)
    gc = apply_gc(plan_gc(Path(path).parent.parent, min_age_s=0))
    return {"ok": report.ok, "clean": report.clean, "failures": sorted(store.failures()), "gc_skipped": gc.skipped}


def _open_for_append(path: str) -> str:
    open_store(path, "a")
    return "opened"


@NEEDS_ROOT
def test_group_members_share_a_store(lab):
    path = str(lab["root"] / "toy" / "clip.zarr")
    assert _as_user(lab["a"], 0o002, _start, path) == {"ok": True, "value": 1}
    result = _as_user(lab["b"], 0o002, _append, path)
    assert result["ok"], result
    assert result["value"] == {"ok": 3, "clean": True, "failures": [], "gc_skipped": []}
    gid = os.stat(lab["root"]).st_gid
    owners = set()
    for p in [Path(path).parent, *Path(path).parent.rglob("*")]:
        st = os.lstat(p)
        owners.add(pwd.getpwuid(st.st_uid).pw_name)
        assert st.st_gid == gid, p  # the setgid root's group, whoever created it
        assert st.st_mode & stat.S_IWGRP, f"{p} is not group-writable: {stat.filemode(st.st_mode)}"
        if p.is_dir():
            assert st.st_mode & stat.S_ISGID, p
    assert owners == {lab["a"], lab["b"]}


@NEEDS_ROOT
def test_outsider_gets_one_line(lab):
    path = str(lab["root"] / "toy" / "clip.zarr")
    assert _as_user(lab["a"], 0o022, _start, path)["ok"]  # a's umask 022: nothing group-writable
    denied = _as_user(lab["b"], 0o002, _open_for_append, path)
    assert not denied["ok"] and denied["error"].startswith("PermissionProblem: cannot write ")
    assert f"owner {lab['a']}" in denied["error"] and "\n" not in denied["error"]

    def cli() -> list:
        res = CliRunner().invoke(app, ["verify", path, "--remove-temporaries"])
        return [res.exit_code, res.output]

    code, output = _as_user(lab["x"], 0o002, cli)["value"]
    assert code == 2 and output.count("\n") == 1 and f"owner {lab['a']}" in output, output


def test_umask_option(tmp_path):
    assert parse_umask("002") == 0o002 and parse_umask("0o027") == 0o027 and parse_umask("0022") == 0o022
    res = CliRunner().invoke(app, ["--umask", "8", "du", str(tmp_path)])
    assert res.exit_code == 2 and "--umask" in res.output
    old = os.umask(0o022)
    try:
        store_path = tmp_path / "cache"
        store_path.mkdir()
        res = CliRunner().invoke(app, ["--umask", "007", "du", str(store_path)])
        assert res.exit_code == 0, res.output
        assert os.umask(0o022) == 0o007  # the option set this process's umask
    finally:
        os.umask(old)
