# PyInstaller hook for OpenVINO (pyinstaller-hooks-contrib has none). OpenVINO loads its device
# plugins and model frontends at run time, by file name, from the folder that holds libopenvino:
# binary analysis never sees them, and without the CPU plugin the bundle said
# 'Device with "CPU" name is not registered in the OpenVINO Runtime' (issue 27). The pip wheel has
# no plugins.xml (the plugin list is built into libopenvino), so the files only have to sit beside
# libopenvino in openvino/libs/, as in the wheel.
#
# Only what allblast runs is taken: the CPU plugin, the ONNX frontend (compile_model reads the
# cached .onnx export) and the IR one, and TBB's thread binding. Not the GPU, NPU, AUTO, HETERO and
# batching plugins, nor the PyTorch, TensorFlow, TFLite, Paddle, JAX and GGUF frontends, the GPU
# kernel cache (cache.json), headers or CMake files: 77 MB of the wheel that a user never runs.
from pathlib import Path

from PyInstaller.utils.hooks import collect_dynamic_libs

KEEP = ("intel_cpu_plugin", "onnx_frontend", "ir_frontend", "tbbbind", "hwloc")


def _wanted(path: str) -> bool:
    name = Path(path).name
    return any(part in name for part in KEEP)


binaries = [(src, dest) for src, dest in collect_dynamic_libs("openvino", search_patterns=["*.so", "*.so.*", "*.dll",
                                                                                               "*.dylib"])
            if _wanted(src)]
# Imported by openvino's own __init__ (a frontend's Python side is loaded only by convert_model).
excludedimports = ["openvino.frontend.pytorch", "openvino.frontend.tensorflow", "openvino.frontend.jax",
                   "openvino.tools", "openvino_telemetry"]
