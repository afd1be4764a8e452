"""Grad-CAM (Selvaraju et al., 2017): where in the cell the network looked for a class.

The activations and gradients of the backbone's last convolutional stage (the feature map the
paper's max-pool head reads) are taken with a forward hook on `model.backbone`, not from a copy of
the network: the class score's gradient, averaged over the map, weights each channel; the ReLU of
the weighted sum, upsampled to the image, is the heat map.
"""
from __future__ import annotations

import numpy as np
import torch

from ..data.dataset import resize_square, to_model_input


def grad_cam(model, spec, rgb: np.ndarray, *, target: int | None = None, device="cpu",
             temperature: float = 1.0) -> tuple[np.ndarray, int, np.ndarray]:
    """Heat map for `target` (default: the predicted class) over an RGB uint8 image.

    Returns (heat map (H, W) float32 in [0, 1] at the image's own size, the class index used, the
    image's calibrated probabilities). The model is left in eval mode and its weights untouched.
    """
    device = torch.device(device)
    h, w = rgb.shape[:2]
    square = resize_square(rgb, spec.img_size, spec.interpolation)
    x = to_model_input(torch.from_numpy(np.ascontiguousarray(square.transpose(2, 0, 1)))[None], spec, device,
                       channels_last=False)
    captured: dict[str, torch.Tensor] = {}

    def keep(_module, _inputs, output):
        captured["map"] = output

    model.eval()
    hook = model.backbone.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            logits = model(x)
            index = int(logits.argmax(1)) if target is None else int(target)
            fmap = captured["map"]
            (grads,) = torch.autograd.grad(logits[0, index], fmap)  # no weight gradients are made
    finally:
        hook.remove()
    weights = grads.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * fmap).sum(1, keepdim=True)).detach()
    cam = torch.nn.functional.interpolate(cam.float(), size=(h, w), mode="bilinear", align_corners=False)[0, 0]
    cam = cam - cam.min()
    peak = float(cam.max())
    cam = cam / peak if peak > 0 else cam
    probs = (logits.detach().float() / temperature).softmax(1)[0].cpu().numpy()
    return cam.cpu().numpy().astype(np.float32), index, probs


def hot_spot(cam: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """(y, x) centre of the hottest region (pixels >= `level` x the maximum): the map's peak. An
    argmax would be arbitrary on the flat top an upsampled coarse map has."""
    ys, xs = np.nonzero(cam >= level * float(cam.max()))
    return float(ys.mean()), float(xs.mean())
