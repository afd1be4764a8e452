"""Warming up for Train and Predict: after the window's first paint, a pool thread imports what
pressing Train (torch, timm, the training code, scikit-learn's metrics) and Predict (the inference
backend of the user's settings) would otherwise wait for, one import at a time so that closing the
window can stop it between two (an import still running while Python shuts down fails). The large
native libraries (libtorch, OpenVINO's runtime) are loaded first with the GIL released
(native_preload), so the imports themselves hold the GIL only for their Python bindings."""
from __future__ import annotations

import gc
import importlib
import threading

from ..workers import IMPORTS
from ..native_preload import preload_native


def _start_worker_server() -> None:
    from engine.utils.jobs import start_worker_server

    from ..workers import lower_thread_priority

    lower_thread_priority()  # the fork server and the workers it forks inherit it
    start_worker_server()  # a separate process: imports torch there while we import it here


def _load_prediction_backend(backend: str) -> None:
    from engine.learn.backends.base import BackendError
    from engine.learn.backends.loader import choose_backend

    if backend in ("auto", "openvino"):
        preload_native("openvino")
    try:
        choose_backend(backend, "auto")  # imports OpenVINO when `backend` would run on it
    except BackendError:
        pass  # not installed, or not for this device: the Predict dialog says so when it is used


WARM_UP_STEPS = (  # what Train needs, loaded ahead; each step is one import (or the fork server)
    _start_worker_server,
    lambda: preload_native("torch"),  # libtorch's 0.4-0.9 s load, with the GIL released
    lambda: importlib.import_module("engine.learn.fit"),  # torch and the training code
    # engine.learn.model imports timm only when it builds a network: import it here, with the
    # ~1,500 modules it pulls in (torchvision, torch._dynamo, sympy, huggingface_hub), or the
    # training thread did it after Train was pressed and held the GIL for up to 200 ms at a time.
    lambda: importlib.import_module("timm.models"),
    lambda: importlib.import_module("engine.learn.model"),
    lambda: importlib.import_module("engine.learn.weights"),
    lambda: importlib.import_module("sklearn.metrics"),  # the validation metrics (scipy)
)


def start_warm_up(runner, stop: threading.Event, backend: str | None = None):
    """Run WARM_UP_STEPS (and the prediction `backend`'s import) on `runner`'s pool, stopping
    between steps once `stop` is set; returns the worker. The steps are read when it starts, so
    a test can replace them."""
    steps = WARM_UP_STEPS + ((lambda: _load_prediction_backend(backend)),) if backend else WARM_UP_STEPS

    def load() -> None:
        for step in steps:
            if stop.is_set():
                return
            with IMPORTS:
                step()
            # What an import made lives as long as the app (torch and timm: ~10^6 objects): out
            # of the cyclic collector's sight, or its next full collection on the GUI thread
            # walks them all (0.1-0.3 s with the event loop stopped).
            gc.freeze()

    return runner.run(load, key="warm-up")
