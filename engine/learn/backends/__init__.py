"""Inference backends: the same prediction through torch, OpenVINO or ONNX Runtime.

    base                 Backend (normalised images -> logits), BACKENDS, PRECISIONS, BackendError,
                         BackendUnavailable (a fast backend that cannot start: `auto` falls back)
    torch_backend        TorchBackend: the reference; CUDA; autocast for bf16 / f16
    onnx_export          export_onnx: a model as ONNX with its description in the metadata
    cache                cache_entry: exported / compiled files beside the model, keyed by sha256
    openvino_backend     OpenVinoBackend: compiled once per model and precision (OpenVINO's cache)
    onnxruntime_backend  OnnxRuntimeBackend: f32
    loader               choose_backend (auto), open_predictor -> Predictor

Import the modules themselves (`from engine.learn.backends.loader import open_predictor`): this
package imports nothing, so the CLI reads the backend names without loading torch.
"""
