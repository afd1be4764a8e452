"""Benchmark: peak memory of a scan over a folder holding one decompression bomb, with and without
the pixel limit.

Run by hand (not a test):  python benchmarks/bench_scan_bomb.py [--size 30000] [--cells 8]
The folder is one all-black 1-bit PNG of SIZE x SIZE pixels (~110 KB on disk for 30000, written
row block by row block, so making it needs a few MB) and CELLS real C-NMC cells. Each variant scans
it in a fresh Python process and reports that process's peak resident memory (ru_maxrss):
tracemalloc cannot see OpenCV's allocations, and a process's high-water mark only grows, so
variants must not share one. "no limit" is what the scan did before the limit (it decodes the
bomb); "limit" is the default (the header is read, the bomb refused unread). "cells only" (no
bomb) is the floor: imports plus decoding the cells.
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
VARIANTS = {"cells only": None, "no limit (before)": 0, "limit (after)": None}


def write_png_bomb(path: Path, width: int, height: int) -> None:
    """An all-black 1-bit grayscale PNG written row block by row block: a 30000 x 30000 bomb costs
    ~110 KB on disk and a few MB to make, and gigabytes to decode (the tests use it too)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\0" * (1 + (width + 7) // 8)  # filter byte + packed bits
    comp, idat = zlib.compressobj(9), []
    for start in range(0, height, 1024):
        idat.append(comp.compress(row * min(1024, height - start)))
    idat.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(idat)) + chunk(b"IEND", b""))


def make_folders(base: Path, size: int, cells: int) -> tuple[Path, Path]:
    """(folder with cells only, folder with the same cells and the bomb)."""
    plain, bombed = base / "cells", base / "bombed"
    sources = sorted((SHARED / "cnmc-samples" / "training_data" / "fold_0").rglob("*.bmp"))[:cells]
    if not sources:
        sys.exit(f"no C-NMC samples found under {SHARED}")
    for folder in (plain, bombed):
        folder.mkdir(parents=True)
        for src in sources:
            shutil.copy(src, folder / src.name)
    write_png_bomb(bombed / "bomb.png", size, size)
    return plain, bombed


def child(folder: str, max_pixels: int | None) -> None:
    """One scan in this (fresh) process; prints what it cost as JSON."""
    sys.path.insert(0, str(REPO))
    from engine.data.scan import scan

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    result = scan(folder, max_pixels=max_pixels)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"peak_mib": peak / 1024, "import_mib": before / 1024, "seconds": seconds,
                      "cells": len(result.cells), "problems": [p.reason for p in result.problems]}))


def run_variant(folder: Path, max_pixels: int | None) -> dict:
    cmd = [sys.executable, __file__, "--child", str(folder), "--max-pixels", "default" if max_pixels is None else str(max_pixels)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=30000, help="bomb width and height (default: %(default)s)")
    ap.add_argument("--cells", type=int, default=8, help="real cells beside it (default: %(default)s)")
    ap.add_argument("--child", metavar="DIR", help=argparse.SUPPRESS)
    ap.add_argument("--max-pixels", default="default", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, None if args.max_pixels == "default" else int(args.max_pixels))
        return

    with tempfile.TemporaryDirectory() as tmp:
        plain, bombed = make_folders(Path(tmp), args.size, args.cells)
        bomb_kb = (bombed / "bomb.png").stat().st_size / 1024
        print(f"bomb: {args.size} x {args.size} PNG, {bomb_kb:.0f} KiB on disk; {args.cells} C-NMC cells beside it")
        results = {}
        for name, limit in VARIANTS.items():
            r = results[name] = run_variant(plain if name == "cells only" else bombed, limit)
            print(f"{name:>18}: peak RSS {r['peak_mib']:7.0f} MiB (after imports {r['import_mib']:4.0f} MiB), "
                  f"{r['seconds']:5.2f} s, {r['cells']} cells, problems: {r['problems'] or 'none'}")
        before, after = results["no limit (before)"]["peak_mib"], results["limit (after)"]["peak_mib"]
        print(f"peak memory, no limit / limit: {before / after:.1f}x ({before:.0f} -> {after:.0f} MiB)")


if __name__ == "__main__":
    main()
