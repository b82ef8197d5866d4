"""VQ-8 tokenizer: golden tests against ``../shared/reference/vq8`` plus fast checks on a tiny model."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pure.config import VQConfig
from pure.tiny import det_state_dict
from pure.vq import (
    VQCheckpointError,
    VQCheckpointNotFoundError,
    VQModel,
    image_to_tensor,
    load_vq,
    tensor_to_image,
)
from tests.reference import fixture_names, require

IMAGES = fixture_names("vq8/vq8.json", "images", ["img_64x64", "img_128x64"])
TINY = VQConfig(source="tiny", seed=3, channels=32, z_channels=64, codebook_size=512)


# ---------------------------------------------------------------- golden (full-size VQ-8, det weights)


@pytest.fixture(scope="module")
def vq8_dir(reference_dir: Path) -> Path:
    return require(reference_dir, "vq8/state_dict_shapes.json", "vq8/vq8.json") / "vq8"


@pytest.fixture(scope="module")
def full_model(vq8_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> VQModel:
    """The released architecture with the fixtures' weights, loaded through a real checkpoint file."""
    shapes = json.loads((vq8_dir / "state_dict_shapes.json").read_text())
    seed = json.loads((vq8_dir / "vq8.json").read_text())["weights_seed"]
    path = tmp_path_factory.mktemp("vq8") / "vq_det.pt"
    torch.save({"model": det_state_dict(shapes, seed)}, path)  # includes quantize.codebook_used
    model = load_vq(str(path))
    path.unlink()
    return model


@pytest.fixture(scope="module", params=IMAGES)
def golden(request: pytest.FixtureRequest, vq8_dir: Path, full_model: VQModel) -> dict:
    """Reference arrays and our outputs for one fixture image, computed once."""
    name = request.param
    ref = dict(np.load(require(vq8_dir, f"{name}.npz", f"{name}.png") / f"{name}.npz"))
    x = image_to_tensor(Image.open(vq8_dir / f"{name}.png"))[None]
    latent = full_model.latent(x)
    codes_ref = torch.from_numpy(ref["codes"])[None]
    dec = full_model.decode(codes_ref, clamp=False)
    ours = {
        "x": x,
        "h_pre_quant": latent,
        "codes": full_model.quantize(latent)[0],
        "zq_codebook": full_model.codebook_rows(codes_ref),
        "dec": dec,
        "out_uint8": np.array(tensor_to_image(dec[0])),
    }
    return {"name": name, "ref": ref, "ours": ours}


def test_full_model_matches_manifest(vq8_dir: Path, full_model: VQModel):
    shapes = json.loads((vq8_dir / "state_dict_shapes.json").read_text())
    shapes.pop("quantize.codebook_used")
    ours = {key: list(value.shape) for key, value in full_model.state_dict().items()}
    assert ours == shapes
    n_params = json.loads((vq8_dir / "vq8.json").read_text())["n_params"]
    assert sum(p.numel() for p in full_model.parameters()) == n_params
    assert full_model.downsample == 8 and not full_model.training


def test_preprocessing_equals_reference(golden: dict):
    np.testing.assert_array_equal(golden["ours"]["x"].numpy(), golden["ref"]["x"])


@pytest.mark.parametrize(("key", "atol"), [("h_pre_quant", 1e-4), ("zq_codebook", 1e-5), ("dec", 1e-4)])
def test_float_outputs_match_reference(golden: dict, key: str, atol: float):
    ours = golden["ours"][key].numpy()
    assert ours.shape == golden["ref"][key].shape and ours.dtype == np.float32
    np.testing.assert_allclose(ours, golden["ref"][key], rtol=0, atol=atol, err_msg=golden["name"])


def test_codes_equal_reference(golden: dict):
    """Equal, except at near-ties (the reference's squared-distance margin below 1e-5, as in the 512 px
    layout test), where float rounding may pick the other code."""
    codes = golden["ours"]["codes"]
    assert codes.dtype == torch.int64 and codes.shape == golden["ref"]["codes"].shape
    tie = golden["ref"]["code_margin"] < 1e-5
    assert tie.mean() < 0.01, "more near-ties than float rounding explains"
    np.testing.assert_array_equal(codes.numpy()[~tie], golden["ref"]["codes"][~tie])


def test_uint8_output_matches_reference(golden: dict):
    ours = golden["ours"]["out_uint8"].astype(np.int16)
    diff = np.abs(ours - golden["ref"]["out_uint8"].astype(np.int16))
    assert diff.max() <= 1, "uint8 output may differ only by truncation at a boundary"
    assert (diff > 0).mean() < 1e-3


# ---------------------------------------------------------------- tiny model


@pytest.fixture(scope="module")
def tiny() -> VQModel:
    return load_vq(cfg=TINY)


def _tiny_images(batch: int, height: int, width: int) -> torch.Tensor:
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(0)) * 2 - 1


def test_round_trip_shapes_and_dtypes(tiny: VQModel):
    images = _tiny_images(2, 32, 48)
    codes = tiny.encode(images)
    assert codes.shape == (2, 4, 6) and codes.dtype == torch.int64
    assert 0 <= int(codes.min()) and int(codes.max()) < TINY.codebook_size
    decoded = tiny.decode(codes)
    assert decoded.shape == (2, 3, 32, 48) and decoded.dtype == torch.float32
    assert decoded.min() >= -1 and decoded.max() <= 1
    torch.testing.assert_close(decoded, tiny.decode(codes, clamp=False).clamp(-1, 1), rtol=0, atol=0)
    again = tiny.encode(decoded)
    assert again.shape == codes.shape and again.dtype == torch.int64


def test_batch_matches_single_images(tiny: VQModel):
    images = _tiny_images(2, 16, 24)
    codes = tiny.encode(images)
    torch.testing.assert_close(codes[1:], tiny.encode(images[1:]), rtol=0, atol=0)


def test_size_not_multiple_of_8_is_rejected(tiny: VQModel):
    with pytest.raises(ValueError, match=r"24x36 .*multiple of 8"):
        tiny.encode(_tiny_images(1, 36, 24))


def test_bad_codes_are_rejected(tiny: VQModel):
    with pytest.raises(ValueError, match=r"\[0, 512\)"):
        tiny.decode(torch.full((1, 2, 2), 512))
    with pytest.raises(ValueError, match="integer codes"):
        tiny.decode(torch.zeros(1, 2, 2))


def test_tiny_weights_are_deterministic(tiny: VQModel):
    again = load_vq("tiny", cfg=TINY)
    for (key, a), b in zip(tiny.state_dict().items(), again.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=key)
    other = load_vq("tiny", cfg=replace(TINY, seed=TINY.seed + 1))
    assert not torch.equal(tiny.quant_conv.weight, other.quant_conv.weight)


# ---------------------------------------------------------------- checkpoint files


def _save(path: Path, state: dict, wrap: bool = True) -> str:
    torch.save({"model": state} if wrap else state, path)
    return str(path)


def test_checkpoint_round_trip(tiny: VQModel, tmp_path: Path):
    state = dict(tiny.state_dict(), **{"quantize.codebook_used": torch.zeros(65536)})
    for wrap in (True, False):
        loaded = load_vq(_save(tmp_path / "vq.pt", state, wrap), cfg=TINY)
        torch.testing.assert_close(loaded.state_dict(), tiny.state_dict(), rtol=0, atol=0)


def test_checkpoint_key_errors_name_keys_and_file(tiny: VQModel, tmp_path: Path):
    state = tiny.state_dict()
    missing = {k: v for k, v in state.items() if k != "encoder.mid.1.q.weight"}
    with pytest.raises(VQCheckpointError, match=r"missing\.pt.*1 missing keys: encoder\.mid\.1\.q\.weight"):
        load_vq(_save(tmp_path / "missing.pt", missing), cfg=TINY)
    extra = dict(state, **{"encoder.extra.weight": torch.zeros(1)})
    with pytest.raises(VQCheckpointError, match=r"extra\.pt.*1 unexpected keys: encoder\.extra\.weight"):
        load_vq(_save(tmp_path / "extra.pt", extra), cfg=TINY)
    with pytest.raises(VQCheckpointError, match=r"shape mismatches.*quant_conv\.weight"):
        load_vq(_save(tmp_path / "tiny.pt", state), cfg=replace(TINY, z_channels=32))
    with pytest.raises(VQCheckpointError, match="no VQ state dict"):
        load_vq(_save(tmp_path / "list.pt", [1, 2], wrap=False), cfg=TINY)


def test_a_vq_of_another_downsampling_or_codebook_is_named_as_such(tmp_path: Path):
    """vq_ds16_c2i.pt (LlamaGen's other tokenizer) was answered with dozens of key names and the advice to set
    the vq config to match the file, which no config can do for PURE's vocabulary and image layout."""
    small = {"channels": 32, "z_channels": 64}
    ds16 = VQModel(channel_mult=(1, 1, 2, 2, 4), **small).state_dict()
    other_codebook = VQModel(codebook_size=8192, **small).state_dict()
    cfg = VQConfig(source="tiny", **small)
    for name, state, reason in (
        ("vq_ds16_c2i.pt", ds16, "its encoder has 5 levels, so it downsamples 16x (a vq_ds16 file?), where "),
        ("vq_8k.pt", other_codebook, "its codebook has 8192 codes, where PURE's vocabulary has 16384 image "),
    ):
        with pytest.raises(VQCheckpointError) as caught:
            load_vq(_save(tmp_path / name, state), cfg=cfg)
        message = str(caught.value)
        assert message.startswith(f"{tmp_path / name} is not a VQ that PURE's model reads: {reason}"), message
        assert message.endswith("pass LlamaGen's vq_ds8_c2i.pt (scripts/download.py fetches it)")
        assert "missing keys" not in message and "\n" not in message


def test_a_file_that_is_no_checkpoint_is_one_clear_line(tiny: VQModel, tmp_path: Path):
    """An image, random bytes or a cut download: one line naming the file and what to pass, without torch's
    advice about weights_only (which does not apply) or a bare number."""
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    (tmp_path / "junk.pt").write_bytes(bytes(range(256)) * 8)
    whole = Path(_save(tmp_path / "cut.pt", tiny.state_dict())).read_bytes()
    (tmp_path / "cut.pt").write_bytes(whole[: len(whole) // 2])
    for name in ("a.png", "junk.pt", "cut.pt"):
        with pytest.raises(VQCheckpointError) as caught:
            load_vq(str(tmp_path / name), cfg=TINY)
        message = str(caught.value)
        assert message.startswith(f"{tmp_path / name} is not a readable torch checkpoint (")
        assert "vq_ds8_c2i.pt" in message and "weights_only" not in message and "\n" not in message


def test_a_checkpoint_pickling_objects_besides_tensors_names_the_object(tiny: VQModel, tmp_path: Path):
    """torch.save(model) or a training script's numpy step count: torch refuses them with weights_only, and
    its first line, which was the reason shown, said "Weights only load failed. This file can still be
    loaded, to do so you have two options, " with terminal bold codes and neither option."""
    torch.save(tiny, tmp_path / "module.pt")
    torch.save({"model": tiny.state_dict(), "steps": np.int64(5)}, tmp_path / "numpy.pt")
    for name, global_name in (("module.pt", r"pure\.vq\.VQModel"), ("numpy.pt", r"numpy\.[\w.]*scalar")):
        with pytest.raises(VQCheckpointError) as caught:
            load_vq(str(tmp_path / name), cfg=TINY)
        message = str(caught.value)
        assert re.match(
            rf"{re.escape(str(tmp_path / name))} is not a readable torch checkpoint \(it holds {global_name} "
            r"besides tensors, which is not unpickled: save its state dict alone\); pass LlamaGen's",
            message,
        ), message
        assert "\x1b" not in message and "two options" not in message and "\n" not in message


def test_a_checkpoint_converted_to_safetensors_loads_and_a_damaged_one_is_one_line(tiny: VQModel, tmp_path):
    """People convert .pt files to .safetensors (no pickle); it was refused as 'not a readable torch
    checkpoint'."""
    from safetensors.torch import save_file

    path = tmp_path / "vq_ds8_c2i.safetensors"
    save_file({k: v.contiguous() for k, v in tiny.state_dict().items()}, path)
    loaded = load_vq(str(path), cfg=TINY)
    torch.testing.assert_close(loaded.state_dict(), tiny.state_dict(), rtol=0, atol=0)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(VQCheckpointError) as caught:
        load_vq(str(path), cfg=TINY)
    assert str(caught.value).startswith(f"{path} is not a readable safetensors file (")
    assert "\n" not in str(caught.value)


def test_missing_local_file(tmp_path: Path):
    with pytest.raises(VQCheckpointNotFoundError, match="nope.pt"):
        load_vq(str(tmp_path / "nope.pt"), cfg=TINY)


def test_a_link_to_nothing_is_named_as_a_link(tmp_path: Path):
    link = tmp_path / "vq_ds8_c2i.pt"
    link.symlink_to(tmp_path / "blobs" / "0123abcd")
    broken = r"is a link to a file that does not exist \(vq_ds8_c2i\.pt -> "
    with pytest.raises(VQCheckpointNotFoundError, match=broken) as info:
        load_vq(str(link), cfg=TINY)
    assert "not found" not in str(info.value)


def test_folder_given_as_checkpoint_names_the_file_in_it(tmp_path: Path):
    folder = tmp_path / "models" / "FoundationVision" / "LlamaGen"
    folder.mkdir(parents=True)
    itself = r"is a folder; pass the checkpoint file \(\.pt or \.safetensors\) itself"
    with pytest.raises(VQCheckpointNotFoundError, match=itself) as info:
        load_vq(str(folder), cfg=TINY)
    assert "not found" not in str(info.value)
    for name in ("vq_ds8_c2i.safetensors", "vq_ds8_c2i.pt"):  # a converted one is a checkpoint too
        (folder / name).write_bytes(b"")
        in_it = rf"is a folder; pass the checkpoint file \(\.pt or \.safetensors\) in it \(.*{name}\)"
        with pytest.raises(VQCheckpointNotFoundError, match=in_it):
            load_vq(str(folder), cfg=TINY)
        (folder / name).unlink()


def test_a_hugging_face_cache_folder_given_as_checkpoint_names_the_file_in_its_snapshot(tmp_path: Path):
    """--vq models--FoundationVision--LlamaGen (hf_hub_download's cache folder, or the cache above it) said
    only to pass the file itself, e.g. vq_ds8_c2i.pt, though it is right there in the snapshot."""
    repo = tmp_path / "hub" / "models--FoundationVision--LlamaGen"
    (repo / "snapshots" / "abc").mkdir(parents=True)
    (repo / "snapshots" / "abc" / "vq_ds8_c2i.pt").write_bytes(b"")
    for given in (repo, tmp_path / "hub"):
        with pytest.raises(VQCheckpointNotFoundError) as caught:
            load_vq(str(given), cfg=TINY)
        assert str(caught.value).endswith(f"in it ({repo / 'snapshots' / 'abc' / 'vq_ds8_c2i.pt'})")


def test_hub_download_offline_explains_what_to_fetch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import huggingface_hub.constants as hub_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)  # read at import time
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(VQCheckpointNotFoundError) as info:
        load_vq()  # FoundationVision/LlamaGen:vq_ds8_c2i.pt; fails before building the model
    message = str(info.value)
    assert "vq_ds8_c2i.pt" in message
    assert "https://huggingface.co/FoundationVision/LlamaGen/resolve/main/vq_ds8_c2i.pt" in message
    with pytest.raises(VQCheckpointNotFoundError, match=r"file\.pt.*some/repo/resolve/main/file\.pt"):
        load_vq("some/repo:file.pt", cfg=TINY)


# ---------------------------------------------------------------- pixel conversion


def test_partial_alpha_is_blended_onto_white():
    pixels = np.array([[[200, 100, 50, 128], [10, 20, 30, 0], [1, 2, 3, 255]]], dtype=np.uint8)
    x = image_to_tensor(Image.fromarray(pixels, "RGBA"))
    # (1 - a) * 255 + a * rgb with a = alpha / 255, truncated to uint8.
    expected = np.array([[[227, 177, 152], [255, 255, 255], [1, 2, 3]]], dtype=np.float64)
    assert x.shape == (3, 1, 3) and x.dtype == torch.float32
    expected = (expected / 255 * 2 - 1).astype(np.float32).transpose(2, 0, 1)
    np.testing.assert_array_equal(x.numpy(), expected)


@pytest.mark.parametrize("mode", ["RGBA", "L", "P"])
def test_opaque_modes_equal_convert_rgb(mode: str):
    rgb = Image.fromarray(np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3) * 4)
    image = rgb.convert(mode)
    expected = image_to_tensor(image.convert("RGB"))
    torch.testing.assert_close(image_to_tensor(image), expected, rtol=0, atol=0)


def test_tensor_to_image_clamps_and_truncates():
    near = 127.9 / 255 * 2 - 1  # (x + 1) / 2 * 255 = 127.9 -> 127, not 128
    x = torch.tensor([near, 1.5, -2.0, 1.0]).reshape(1, 1, 4).expand(3, 1, 4)
    out = np.array(tensor_to_image(x))
    assert out.shape == (1, 4, 3) and out.dtype == np.uint8
    assert out[0, :, 0].tolist() == [127, 255, 0, 255]
