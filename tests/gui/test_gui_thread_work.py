"""Issue 28: slow work stays off the GUI thread (runs listing, the warm-up's native libraries)."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading

import engine.workspace.catalog as catalog_module

from .conftest import open_and_wait
from .test_training_ui import link_subset


def test_the_runs_panel_lists_runs_on_a_pool_thread(qtbot, window, pbc_dir, tmp_path, monkeypatch):
    """Regression: refresh_runs read every run's config, model card and metrics on the GUI thread
    (at every epoch's end and after every training): it must read them on a worker."""
    folder = link_subset(pbc_dir, tmp_path / "pbc", 2)
    open_and_wait(qtbot, window, folder)
    ui = window.training
    run = ui.catalog.root / "20260101-000000-tf_efficientnet_lite0"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"backbone": "tf_efficientnet_lite0", "split": "image"}))
    (run / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "train": {"loss": 1.5, "accuracy": 0.4},
                                                   "val": {"loss": 1.2, "accuracy": 0.5}, "lr": 1e-3}) + "\n")
    readers: list[threading.Thread] = []
    real = catalog_module.list_runs
    monkeypatch.setattr(catalog_module, "list_runs",
                        lambda root: readers.append(threading.current_thread()) or real(root))
    with qtbot.waitSignal(ui.run_list.refreshed, timeout=30_000):
        ui.refresh_runs()
    assert readers and threading.main_thread() not in readers
    assert [r.path for r in ui.runs.model.runs()] == [run]
    # A selection asked for before the list arrives is made when it does.
    run2 = ui.catalog.root / "20260102-000000-tf_efficientnet_lite0"
    run2.mkdir()
    (run2 / "config.json").write_text(json.dumps({"backbone": "tf_efficientnet_lite0"}))
    with qtbot.waitSignal(ui.run_list.refreshed, timeout=30_000):
        ui.refresh_runs()
        ui.run_list.select_run(run2)
    assert ui.runs.selected_path() == run2
    # Selecting a saved run shows its curves, read on a pool thread too.
    ui.runs.select_run(run)
    qtbot.waitUntil(lambda: list(ui.dashboard.curves["val_loss"].getData()[0] or []) == [1.0], timeout=30_000)
    assert "(saved run)" in ui.dashboard.title.text()


def test_the_warm_up_loads_libtorch_before_importing_torch():
    """native_preload maps libtorch through a ctypes call (the GIL released); `import torch` then
    finds it loaded and works as usual."""
    code = textwrap.dedent("""
        import sys
        from allblast_gui.native_preload import preload_native
        loaded = preload_native("torch")
        assert "torch" not in sys.modules, "preloading must not import torch"
        assert [p.name for p in loaded] == ["libtorch_global_deps.so", "libtorch.so"], loaded
        maps = open("/proc/self/maps").read()
        assert "libtorch_cpu.so" in maps, "libtorch's dependencies are mapped"
        import torch
        assert float((torch.ones(3) * 2).sum()) == 6.0
        assert preload_native("no-such-package") == []
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_the_gui_thread_collector_waits_while_a_heavy_import_runs(qapp):
    """Regression: the collector on the GUI thread walked the objects an import on a pool thread
    was making (0.2-0.3 s stalls at start-up); it now waits until the import is over."""
    import gc

    from allblast_gui.workers import IMPORTS, gui_thread_collector

    collector = gui_thread_collector(interval=3600)  # checked by hand below, never by its timer
    try:
        junk = [[i] for i in range(5000)]  # young objects: generation 0 is over its threshold
        with IMPORTS:
            collector.check()
            assert gc.get_count()[0] >= 5000, "collected during an import"
        collector.check()
        assert gc.get_count()[0] < 5000
        del junk
    finally:
        collector.timer.stop()
        gc.enable()
