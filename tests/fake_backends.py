"""A fake `openvino` module for tests: it imports, and fails where asked as the real one did or
would (no CPU plugin, a graph it cannot compile, a first inference that fails). The pytest process
never loads the real OpenVINO (tests/conftest.py)."""
from __future__ import annotations

import importlib.machinery
import types

import numpy as np

NO_CPU_PLUGIN = ('Exception from src/inference/src/cpp/core.cpp:268:\n'
                 'Device with "CPU" name is not registered in the OpenVINO Runtime')


def fake_openvino(*, cpu: bool = True, compiles: bool = True, runs: bool = True) -> types.ModuleType:
    """A module that imports as `openvino` and fails where asked: no CPU plugin (the bundle of
    issue 27), a graph it cannot compile, or a first inference that fails (an unsupported CPU)."""

    class Request:
        def start_async(self, inputs):
            if not runs:
                raise RuntimeError("Exception from src/plugins/intel_cpu/src/node.cpp:1:\nunsupported CPU "
                                   "instruction set")
            self.out = np.zeros((len(inputs[0]), 2), dtype=np.float32)

        def wait(self):
            pass

        def get_output_tensor(self, _index):
            return types.SimpleNamespace(data=self.out)

    class Compiled:
        def get_property(self, name):
            return {"LOADED_FROM_CACHE": False, "OPTIMAL_NUMBER_OF_INFER_REQUESTS": 1}[name]

        def create_infer_request(self):
            return Request()

    class Core:
        def get_versions(self, device):
            if not cpu:
                raise RuntimeError(NO_CPU_PLUGIN)
            return {device: "fake"}

        def get_property(self, device, name):
            if not cpu:
                raise RuntimeError(NO_CPU_PLUGIN)
            return ["FP32"]

        def set_property(self, _props):
            pass

        def compile_model(self, _path, _device, _config):
            if not compiles:
                raise RuntimeError("Exception from src/core/src/node.cpp:2:\nno kernel for operation Foo")
            return Compiled()

    module = types.ModuleType("openvino")
    module.__spec__ = importlib.machinery.ModuleSpec("openvino", None)  # what find_spec reads (the Predict dialog)
    module.Core, module.__version__ = Core, "fake"
    return module
