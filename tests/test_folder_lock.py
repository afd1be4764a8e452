"""The folder lock is the engine's (engine.workspace.lock), so the CLI takes and respects it too:
a command that writes labels refuses, in one line naming who holds the folder, while the app has it
open; the app sees a command's hold as it sees another window's; commands do not refuse each other
(SQLite keeps concurrent changes safe); a lock left by a process that is gone is ignored. Holders
and commands run in separate processes here."""
from __future__ import annotations

import getpass
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

from engine.labels.store import LabelStore
from engine.utils.process import this_host
from engine.workspace.lock import (LOCK_NAME, FolderHeld, describe_holders, held, holders_message, release_lock,
                                   take_lock)

REPO = Path(__file__).resolve().parents[1]
CELL = "all/UID_1_1_1_all.png"


@pytest.fixture()
def env(tmp_path, monkeypatch):
    """Every process uses the same user data and cache folders, under tmp_path."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    return {**os.environ, "PYTHONPATH": str(REPO)}


def make_images(root: Path) -> Path:
    for k, cls in enumerate(("all", "hem")):
        (root / cls).mkdir(parents=True)
        for i in range(2):
            img = Image.new("RGB", (16, 16), (200 - 60 * k, 40, 40 + 60 * k))
            img.putpixel((i, 0), (i, 255 - i, 7))
            img.save(root / cls / f"UID_{i + 1}_1_1_{cls}.png")
    return root.resolve()


@pytest.fixture()
def folder(tmp_path, env) -> Path:
    """A folder of cells that holds its label store (the lock lives beside it)."""
    root = make_images(tmp_path / "data")
    assert cli(env, "labels", "set", str(root), CELL, "hem").returncode == 0  # the store exists now
    return root


def cli(env, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", "-q", *args], env=env, capture_output=True,
                          text=True, timeout=300)


def holder(env, root: Path, code: str) -> subprocess.Popen:
    """A process that holds `root` (`code` does, then says "holding") until its stdin closes."""
    script = textwrap.dedent("""
        import sys
        from pathlib import Path
        root = Path(sys.argv[1])
    """) + textwrap.dedent(code)
    proc = subprocess.Popen([sys.executable, "-c", script, str(root)], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "holding"
    return proc


APP = """
    from engine.labels.store import LabelStore
    from engine.workspace.lock import take_lock
    store = LabelStore.open(root)  # as the app opens a folder, and locks it
    take_lock(store, "window-1")
    print("holding", flush=True)
    sys.stdin.read()
"""

COMMAND = """
    from engine.workspace.lock import held
    with held(root, program="allblast-engine labels import"):
        print("holding", flush=True)
        sys.stdin.read()
"""


def test_the_cli_refuses_a_folder_the_app_holds_and_says_who(folder, env):
    app = holder(env, folder, APP)
    try:
        r = cli(env, "labels", "set", str(folder), CELL, "all")
        assert r.returncode == 1, r.stderr
        line = r.stderr.strip()
        assert len(line.splitlines()) == 1 and "is open in allblast by" in line and "close it there" in line
        assert getpass.getuser() in line and this_host() in line and f"pid {app.pid}" in line
        for args in (["labels", "import", str(folder), str(folder / "none.csv")],
                     ["labels", "classes", str(folder), "--add", "blast"]):
            assert cli(env, *args).returncode == 1
        assert cli(env, "labels", "classes", str(folder)).returncode == 0  # a listing writes no labels
        assert cli(env, "labels", "export", str(folder), "--out", str(folder.parent / "x.csv")).returncode == 0
        with LabelStore.open(folder) as store:
            assert store.state(CELL).current == "hem", "nothing was written"
    finally:
        app.kill()  # killed, as a crash would: its entry stays in the lock file, stale
        app.wait()
    assert [h["pid"] for h in json.loads((folder / ".allblast" / LOCK_NAME).read_text())] == [app.pid]
    r = cli(env, "labels", "set", str(folder), CELL, "all")
    assert r.returncode == 0, r.stderr
    with LabelStore.open(folder) as store:
        assert store.state(CELL).current == "all"


def test_the_app_sees_a_command_hold_and_another_command_writes_alongside(folder, env):
    command = holder(env, folder, COMMAND)
    try:
        entries = json.loads((folder / ".allblast" / LOCK_NAME).read_text())
        assert [(h["pid"], h["program"]) for h in entries] == [(command.pid, "allblast-engine labels import")]
        with LabelStore.open(folder) as store:  # the app opens the folder meanwhile: it is told
            path, others = take_lock(store, "window-1")
            assert [h["pid"] for h in others] == [command.pid]
            text = describe_holders(others)
            assert this_host() in text and f"process {command.pid}, allblast-engine labels import" in text
            release_lock(path, "window-1")
        r = cli(env, "labels", "set", str(folder), CELL, "all")
        assert r.returncode == 0, r.stderr
        assert [h["pid"] for h in json.loads((folder / ".allblast" / LOCK_NAME).read_text())] == [command.pid]
    finally:
        command.stdin.close()  # the command ends: its entry goes, and the file with the last one
        assert command.wait(timeout=60) == 0
    assert not (folder / ".allblast" / LOCK_NAME).exists()


def test_training_on_expert_labels_respects_the_lock(folder, env, tmp_path):
    app = holder(env, folder, APP)
    try:
        r = cli(env, "train", str(folder), "--out", str(tmp_path / "run"), "--expert-labels", "--epochs", "1",
                "--device", "cpu", "--no-pretrained")
        assert r.returncode == 1 and f"pid {app.pid}" in r.stderr, r.stderr
        assert not (tmp_path / "run").exists()
    finally:
        app.stdin.close()
        app.wait(timeout=60)


def test_a_folder_the_app_opened_before_its_first_label_is_held_too(tmp_path, env):
    """The app keeps a folder's index in the user cache until its first label: its lock is there."""
    root = make_images(tmp_path / "data")
    app = holder(env, root, """
        from engine.labels.project import open_dataset
        from engine.workspace.lock import take_lock
        project = open_dataset(root)
        take_lock(project.store, "window-1")
        print("holding", flush=True)
        sys.stdin.read()
    """)
    try:
        r = cli(env, "labels", "set", str(root), CELL, "all")
        assert r.returncode == 1 and f"pid {app.pid}" in r.stderr, r.stderr
        assert not (root / ".allblast").exists(), "nothing was written into the folder"
    finally:
        app.stdin.close()
        app.wait(timeout=60)


def test_held_in_process(tmp_path, env):
    root = tmp_path / "data"
    (root / ".allblast").mkdir(parents=True)
    lock = root / ".allblast" / LOCK_NAME
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_text(json.dumps([{"user": "Dr. A", "host": this_host(), "pid": dead.pid, "window": "w",
                                 "since": "2026-01-01T00:00:00+00:00"}]))
    with held(root, program="allblast-engine labels set") as path:  # the dead process's entry is stale
        assert path == lock.resolve() or path == lock
        assert [h["pid"] for h in json.loads(lock.read_text())] == [os.getpid()]
        with held(root, program="allblast-engine labels import"):  # commands do not refuse each other
            assert len(json.loads(lock.read_text())) == 2
        assert len(json.loads(lock.read_text())) == 1
    assert not lock.exists()
    # a window on another computer cannot be asked whether it still runs: it counts
    app = {"user": "Dr. B", "host": "elsewhere", "pid": 12, "window": "w", "since": "2026-01-02T00:00:00+00:00"}
    lock.write_text(json.dumps([app]))
    with pytest.raises(FolderHeld) as refused:
        with held(root, program="allblast-engine labels set"):
            pass
    assert refused.value.holders == [app] and json.loads(lock.read_text()) == [app]
    assert str(refused.value) == holders_message(root.resolve(), [app]) == (
        f"{root.resolve()} is open in allblast by Dr. B on elsewhere (pid 12) since 2026-01-02T00:00:00+00:00; "
        "close it there first, then try again")


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_a_command_killed_while_holding_leaves_a_stale_entry_only(folder, env):
    command = holder(env, folder, COMMAND)
    os.kill(command.pid, signal.SIGKILL)
    command.wait()
    lock = folder / ".allblast" / LOCK_NAME
    assert [h["pid"] for h in json.loads(lock.read_text())] == [command.pid]
    with LabelStore.open(folder) as store:  # the app opens the folder: nobody else has it open
        path, others = take_lock(store, "window-1")
        assert others == [] and [h["pid"] for h in json.loads(lock.read_text())] == [os.getpid()]
        release_lock(path, "window-1")
    assert not lock.exists()
