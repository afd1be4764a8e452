"""Load a package's large native libraries without holding the GIL, before the package is imported.

`import torch` maps libtorch (about 900 MB with its CUDA part) and runs its static initialisers
inside the import, holding the GIL: 0.4-0.9 s during which the GUI thread's event loop cannot run,
even though the import happens on a pool thread. A call through ctypes releases the GIL, so
calling the C library's `dlopen` through it does that work while the GUI thread goes on; the
later `import torch` finds the libraries loaded and only registers its Python bindings (measured
on the 2-core AMD EPYC: the largest GUI-thread gap during the load fell from 687 ms to 23 ms).

POSIX only (Linux, macOS); elsewhere, or when a file is missing, nothing is loaded and the import
does the work as before. Only libraries that do not call into Python while they load are listed.
"""
from __future__ import annotations

import ctypes
import importlib.util
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger(__name__)

# package -> files under it, in load order; (name, global): global as the package itself loads it
NATIVE_LIBRARIES: dict[str, tuple[tuple[str, bool], ...]] = {
    # torch/__init__ loads libtorch_global_deps with RTLD_GLOBAL; libtorch pulls libc10, libtorch_cpu
    # and (CUDA builds) libtorch_cuda in as its dependencies.
    "torch": (("lib/libtorch_global_deps.so", True), ("lib/libtorch.so", False)),
    # the runtime at import, and the CPU plugin it loads by file name when a model is compiled
    "openvino": (("libs/libopenvino.so*", False), ("libs/libopenvino_intel_cpu_plugin.so", False)),
}


def _package_dir(package: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(package)  # finds it without importing it
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _dlopen():
    libc = ctypes.CDLL(None)  # the process's own symbols: libc's dlopen
    fn = libc.dlopen
    fn.restype, fn.argtypes = ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_int]
    return fn


def preload_native(package: str) -> list[Path]:
    """dlopen `package`'s NATIVE_LIBRARIES with the GIL released; returns the files loaded. Safe
    to call when the package is imported already (dlopen then only counts a reference)."""
    if os.name != "posix" or sys.platform == "emscripten" or package not in NATIVE_LIBRARIES:
        return []
    root = _package_dir(package)
    if root is None:
        return []
    dlopen, loaded = _dlopen(), []
    for pattern, is_global in NATIVE_LIBRARIES[package]:
        for path in sorted(root.glob(pattern))[:1]:
            mode = os.RTLD_NOW | (os.RTLD_GLOBAL if is_global else os.RTLD_LOCAL)
            if dlopen(os.fsencode(path), mode):  # a ctypes call: the GIL is released meanwhile
                loaded.append(path)
            else:  # the import will report a real problem; this is only a head start
                log.debug("could not preload %s", path)
    return loaded
