"""backbone.quantize: settings and flags, one-line errors, loading layer by layer, the quality guard on the
reference fixtures, a quantised decoding step as one graph, and a restoration through scripts/infer.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import pure.model
from pure.cli import infer_parser
from pure.config import ConfigError, InferConfig, SamplingConfig, load_config
from pure.generate import _start, _step, use_guided_attention
from pure.memory import stored_bytes, weight_bytes
from pure.model import load_backbone, load_text_side
from pure.quantize import QUANTIZED_WEIGHT, QuantizeError, check_adapter, check_quantize
from pure.quantize_quality import FIXTURE_FILES, QualityGuard, load_fixture
from pure.sequence import conversation
from pure.tiny import write_tiny_checkpoint
from tests.fakes import restore_with_tiny
from tests.reference import image_open_in_prompt, other_weights, require

ROOT = Path(__file__).resolve().parents[1]
THRESHOLDS = {
    # Measured on the CPU (float32 activations; benchmarks/quality_quantize.py): int8 110/118 positions,
    # KL 1.96e-4 nats, 75/76 steps, 0.989 of the candidates; int4 39/118, KL 4.6e-2, 62/76, 0.787.
    # Over 7 other weight seeds (99 and 1-6, each with a trajectory drawn by our sampler): int8 top-1
    # 0.924-0.949, KL 2.2e-4-2.7e-4, same 0.961-1.0, kept 0.986-0.988; int4 0.305-0.398, 4.2e-2-5.9e-2,
    # 0.697-0.842, 0.780-0.820. "same" is a fraction of the trajectory's steps, so another fixture set's
    # length fits.
    "int8": dict(top1=0.86, kl=1e-3, same=0.92, overlap=0.97),
    "int4": dict(top1=0.2, kl=0.08, same=0.6, overlap=0.65),
}


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> str:
    return str(write_tiny_checkpoint(tmp_path_factory.mktemp("tiny"), seed=3))


@pytest.fixture(scope="module")
def guard(reference_dir, tmp_path_factory):
    fixture = load_fixture(require(reference_dir, *FIXTURE_FILES), tmp_path_factory.mktemp("reference"))
    return QualityGuard(load_backbone(str(fixture.folder), dtype=torch.float32), fixture)


@pytest.fixture(scope="module")
def open_guard(guard):
    """The guard with the first eighth of the trajectory in the prompt (:func:`image_open_in_prompt`)."""
    fixture = image_open_in_prompt(guard.fixture, len(guard.fixture.tokens) // 8)
    return QualityGuard(load_backbone(str(fixture.folder), dtype=torch.float32), fixture)


def test_setting_flag_and_choices():
    args = infer_parser().parse_args(["--quantize", "int8", "--batch-size", "auto"])
    assert (args.quantize, args.batch_size) == ("int8", "auto")
    assert infer_parser().parse_args(["--batch-size", "3"]).batch_size == 3
    cfg = load_config(InferConfig, None, ["backbone.quantize=int4", "restore.batch_size=auto"])
    assert (cfg.backbone.quantize, cfg.restore.batch_size) == ("int4", "auto")
    assert load_config(InferConfig, None, ["restore.batch_size=6"]).restore.batch_size == 6
    for bad in ("backbone.quantize=int3", "restore.batch_size=0", "restore.batch_size=many"):
        with pytest.raises(ConfigError, match=bad.split("=")[0]):
            load_config(InferConfig, None, [bad])


def test_unavailable_modes_are_one_line_errors(monkeypatch):
    check_quantize("int8", "cpu", torch.float32)
    check_quantize("int4", "cpu", torch.float32)
    cases = [
        (("int4", "cuda", torch.float16), ["int4", "cuda", "bfloat16", "int8"]),
        (("int8", "mps", torch.float32), ["int8", "mps", "cpu and cuda"]),
        (("int4", "cpu", torch.float16), ["int4", "cpu", "float32 or bfloat16", "int8"]),
    ]
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    cases.append((("int4", "cuda:0", torch.bfloat16), ["int4", "cuda:0", "8.0", "7.5", "int8"]))
    for args, words in cases:
        with pytest.raises(QuantizeError) as err:
            check_quantize(*args)
        message = str(err.value)
        assert "\n" not in message and all(w in message for w in words), message
    with pytest.raises(QuantizeError, match="merge_lora.py lora/ MERGED"):
        check_adapter("int8", "lora/")
    check_adapter("none", "lora/")


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_each_projection_is_quantised_as_it_is_read(tiny_folder, mode, monkeypatch):
    """When a projection arrives every earlier one is already quantised: never two full-precision
    projections at once. Embeddings, head and norms are left as they are; the bytes match weight_bytes."""
    load = pure.model.load_quantized_
    full_precision_before: list[int] = []

    def spy(model, name, weight, quantize):
        full_precision_before.append(
            sum(
                type(p) is torch.nn.Parameter and p.device.type != "meta"
                for n, p in model.named_parameters()
                if QUANTIZED_WEIGHT.fullmatch(n)
            )
        )
        load(model, name, weight, quantize)

    monkeypatch.setattr(pure.model, "load_quantized_", spy)
    model = load_backbone(tiny_folder, dtype=torch.float32, quantize=mode)
    assert full_precision_before == [0] * 14  # 2 layers x 7 projections, each quantised on arrival
    for name, p in model.named_parameters():
        assert (type(p) is not torch.nn.Parameter) == bool(QUANTIZED_WEIGHT.fullmatch(name)), name
    assert model.lm_head.weight.dtype == model.model.embed_tokens.weight.dtype == torch.float32
    assert stored_bytes(model) == weight_bytes(model.config, mode, torch.float32, "cpu")
    assert stored_bytes(model) < stored_bytes(load_backbone(tiny_folder, dtype=torch.float32))


def test_guard_rules_reproduce_the_stored_trajectory(guard, reference_dir):
    """The guard's processed distribution is the reference sampler's: entropy, candidate count, p(token)."""
    stored = np.load(reference_dir / "cfg" / "cfg_trajectory.npz")
    ref, tokens = guard.reference, guard.fixture.tokens
    assert torch.equal(ref.kept, torch.from_numpy(stored["step_topk_n_finite"]))
    np.testing.assert_allclose(ref.entropy.numpy(), stored["step_entropy"], rtol=1e-4, atol=1e-5)
    p_token = (ref.probs * (ref.ids == tokens[:, None])).sum(-1).numpy()
    np.testing.assert_allclose(p_token, stored["step_p_token"], rtol=1e-4)


def _check(guard: QualityGuard, mode: str) -> None:
    quality = guard.measure(load_backbone(str(guard.fixture.folder), dtype=torch.float32, quantize=mode))
    limits = THRESHOLDS[mode]
    assert quality.top1_agreement >= limits["top1"]
    assert 0 <= quality.mean_kl <= limits["kl"]
    assert quality.steps == len(guard.fixture.tokens)  # every step of the stored trajectory
    assert quality.same_count_steps >= limits["same"] * quality.steps
    assert quality.candidate_overlap >= limits["overlap"]


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_quality_guard(guard, mode):
    _check(guard, mode)


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_quality_guard_with_the_image_open_in_the_prompt(open_guard, mode):
    """Another fixture set may store a shorter trajectory after a prompt holding part of the image."""
    _check(open_guard, mode)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [5, 99])
def test_quality_guard_on_other_weights(guard, seed, tmp_path):
    """The thresholds hold for the weights of other seeds (another fixture set's), not only the stored ones:
    with 99's own drawn trajectory int4 kept as many candidates as the reference on 0.711 of the steps,
    with seed 5's on 0.697."""
    fixture = other_weights(guard.fixture, seed, tmp_path)
    other = QualityGuard(load_backbone(str(fixture.folder), dtype=torch.float32), fixture)
    for mode in THRESHOLDS:
        _check(other, mode)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_quantised_step_traces_as_one_graph(tiny_folder, mode):
    """torch.compile(fullgraph=True) fails on any host synchronisation, which a CUDA graph cannot hold:
    a decoding step with torchao weights traces whole and writes the eager step's tokens."""
    model = load_backbone(tiny_folder, dtype=torch.float32, quantize=mode)
    tokenizer, vocab = load_text_side(tiny_folder)
    lq = torch.randint(0, 16384, (8, 8), generator=torch.Generator().manual_seed(1))
    prompts = [conversation(tokenizer, vocab, lq)[0], conversation(tokenizer, vocab, lq[:4, :4], "A cat.")[0]]
    outputs = []
    for step in (_step, torch.compile(_step, backend="eager", fullgraph=True, dynamic=False)):
        with torch.inference_mode(), use_guided_attention(model):
            cache, d, rules = _start(
                model, prompts, vocab, SamplingConfig(max_new_tokens=30), [1, 2], None, (2, 2), 3, True
            )
            for _ in range(6):
                step(model, cache, d, rules, None)
        outputs.append(d.out_ids[:, :6].clone())
    assert torch.equal(outputs[0], outputs[1])


@pytest.mark.slow
def test_infer_restores_with_int8(tmp_path):
    """scripts/infer.py's entry point, the tiny real-format checkpoint loaded with --quantize int8."""
    code, out = restore_with_tiny(tmp_path, "--quantize", "int8")
    assert code == 0
    assert Image.open(out / "photo.png").size == (96, 80)
    assert json.loads((out / "photo.json").read_text())["quantize"] == "int8"
