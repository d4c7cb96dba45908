import pandas as pd
import pytest

from xraypipe.atomic import atomic_dir, atomic_path, write_csv, write_json


def test_atomic_path_success_and_failure(tmp_path):
    target = tmp_path / "out" / "a.txt"
    with atomic_path(target) as tmp:
        tmp.write_text("complete")
        assert not target.exists()
    assert target.read_text() == "complete"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "complete"  # the old complete file survives, the half one does not
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.txt"]


def test_atomic_dir_replaces_only_on_success(tmp_path):
    target = tmp_path / "d"
    with atomic_dir(target) as tmp:
        (tmp / "x").write_text("1")
    assert (target / "x").read_text() == "1"
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(target) as tmp:
            (tmp / "y").write_text("2")
            raise KeyboardInterrupt
    assert sorted(p.name for p in target.iterdir()) == ["x"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_csv_and_json_writers(tmp_path):
    write_csv(tmp_path / "t.csv", pd.DataFrame({"a": [1, 2]}))
    write_json(tmp_path / "t.json", {"b": 1})
    assert (tmp_path / "t.csv").read_text() == "a\n1\n2\n"
    assert (tmp_path / "t.json").read_text().strip() == '{\n  "b": 1\n}'


def test_rerun_removes_a_killed_writers_temporaries_but_not_a_live_ones(tmp_path):
    """A SIGKILL mid-write leaves '.test.npy.tmp-<pid>-XXXX.npy' (e.g. 53 MB of cache): the next write of the same
    file removes it; a temporary of a process that is still running is left alone."""
    import os
    import signal
    import subprocess
    import sys

    from xraypipe.atomic import write_text

    target = tmp_path / "cache" / "test.npy"
    target.parent.mkdir()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    live = target.parent / f".test.npy.tmp-{child.pid}-live.npy"
    live.write_bytes(b"in progress")
    child_dead = subprocess.Popen([sys.executable, "-c", "pass"])
    child_dead.wait()
    dead = target.parent / f".test.npy.tmp-{child_dead.pid}-dead.npy"
    dead.write_bytes(b"x" * 1000)
    dead_dir = target.parent / f".test.npy.tmp-{child_dead.pid}-dir"
    dead_dir.mkdir()
    other = target.parent / f".train.npy.tmp-{child_dead.pid}-other.npy"  # another file's: its own writer cleans it
    other.write_bytes(b"y")
    try:
        write_text(target, "done")
        assert target.read_text() == "done"
        assert not dead.exists() and not dead_dir.exists()
        assert live.exists() and other.exists()
        assert sorted(p.name for p in target.parent.iterdir()) == sorted([target.name, live.name, other.name])
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()


@pytest.mark.parametrize("phase,temp_bytes", [("start", 0), ("torn", 500), ("rename", 1000), ("after", None)])
def test_a_kill_point_kills_at_its_phase_and_the_next_write_cleans_up(tmp_path, phase, temp_bytes):
    """xraypipe.fault_injection in one process: SIGKILL at the armed phase of the n-th matching write; what it leaves
    is what the fault-injection suite's reruns must repair."""
    import os
    import signal
    import subprocess
    import sys

    from xraypipe.atomic import write_text

    script = ("from xraypipe.atomic import atomic_path\n"
              "for i in range(3):\n"
              "    with atomic_path('out/a.bin') as tmp:\n"
              "        tmp.write_bytes(bytes(1000))\n")
    env = dict(os.environ, XRAYPIPE_KILL_AT=f"{phase}:out/*.bin#2")
    env.pop("XRAYPIPE_KILL_GROUP", None)  # not this test's group: only the writer dies
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, timeout=60)
    assert proc.returncode == -signal.SIGKILL
    temps = list((tmp_path / "out").glob(".a.bin.tmp-*"))
    assert (tmp_path / "out/a.bin").exists()  # the first write completed, the second was killed
    if temp_bytes is None:
        assert temps == []
    else:
        assert len(temps) == 1 and temps[0].stat().st_size == temp_bytes
    write_text(tmp_path / "out/a.bin", "next")
    assert os.listdir(tmp_path / "out") == ["a.bin"]
