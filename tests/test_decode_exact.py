"""The static-cache decode loop is exact: same tokens as the former loop, same candidates and
probabilities at every step, batch-independent rows, cached logits equal to full forwards, a draw
with the right distribution, and a step with no host synchronisation (traceable as one graph)."""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

import pytest
import torch
from scipy.stats import chisquare
from transformers import ChameleonConfig

from pure.config import SamplingConfig
from pure.generate import _start, _step, cache_lengths, generate, use_guided_attention
from pure.kv_cache import GuidedKVCache
from pure.model import load_backbone, load_tokenizer, load_vocab
from pure.sampling import candidate_width, counter_uniform, draw
from pure.sequence import block_length, conversation
from pure.tiny import synthetic_vocabulary, tiny_backbone_config, tiny_tokenizer, write_tiny_checkpoint
from pure.vocab import Vocab

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from baseline_generate import baseline_generate  # noqa: E402

PIPELINE = dict(image_grids=(2, 2), max_text_tokens=5, stop_after_image=True)
"""How the restoration pipeline calls the loop (a forced 64 px image after at most 5 text tokens)."""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = str(write_tiny_checkpoint(tmp_path_factory.mktemp("tiny"), seed=5))
    tokenizer = load_tokenizer(folder)
    return load_backbone(folder, dtype=torch.float32), tokenizer, load_vocab(tokenizer, folder)


@pytest.fixture(scope="module")
def prompts(tiny):
    """Two prompts of different lengths; the second has its own answer text (so starts elsewhere)."""
    _, tokenizer, vocab = tiny
    lq = torch.randint(0, 16384, (8, 8), generator=torch.Generator().manual_seed(1))
    first, _ = conversation(tokenizer, vocab, lq)
    second, _ = conversation(tokenizer, vocab, lq[:4, :4], answer_text="Small blur. A cat.")
    return [first, second]


def _ranked_generate(monkeypatch, *args, **kwargs):
    """:func:`generate`, and per step every row's largest scores before top-k drops any (``[B, K]``)."""
    import pure.generate

    ranked, top_k = [], pure.generate.top_k_candidates

    def recording(scores, k, k_cap):
        ranked.append(torch.topk(scores, candidate_width(k_cap, scores.shape[-1]), dim=-1).values)
        return top_k(scores, k, k_cap)

    monkeypatch.setattr(pure.generate, "top_k_candidates", recording)
    try:
        return generate(*args, **kwargs), ranked
    finally:
        monkeypatch.undo()


def _assert_same_candidates(new, old, ranked) -> None:
    """The two loops kept the same candidates with the same probabilities at every step. Their logits
    differ by float rounding (another cache layout, other kernels), so a candidate whose score ties the
    k-th largest within rounding may stay in one loop and not in the other (top-k keeps ties): a count
    may differ only there, as the new loop's own scores at that step (``ranked``) must show, and rarely."""
    differing = 0
    for b in range(len(new.kept)):
        for step in (new.kept[b] != old.kept[b]).nonzero().flatten().tolist():
            differing += 1
            low, high = sorted((int(new.kept[b][step]), int(old.kept[b][step])))
            tie = ranked[step][b, low - 1 : high]  # the k-th score and those that stayed in one loop only
            assert tie.max() - tie.min() <= 1e-5 * tie.abs().max(), (b, step, tie)
            # each tied candidate holds at most 1/low of the mass (no more than any of the low kept ones)
            shift = abs(new.p_token[b][step] / old.p_token[b][step] - 1)
            assert shift <= (high - low) / low + 1e-4, (b, step, shift)
        same = new.kept[b] == old.kept[b]
        torch.testing.assert_close(new.p_token[b][same], old.p_token[b][same], rtol=1e-4, atol=1e-9)
        torch.testing.assert_close(new.entropy[b], old.entropy[b], rtol=1e-5, atol=1e-5)
    assert differing <= 0.02 * sum(len(kept) for kept in new.kept)  # rounding ties are rare


@pytest.mark.parametrize(
    "layout",
    [
        PIPELINE,
        pytest.param(dict(image_grids=(2, 2), max_text_tokens=3), marks=pytest.mark.slow),
        pytest.param({}, marks=pytest.mark.slow),
    ],
)
def test_same_tokens_as_the_former_loop(tiny, prompts, layout, monkeypatch):
    """fp32, guidance on, the same counter-based draw: every token identical, rules' outputs equal."""
    model, _, vocab = tiny
    sampling = SamplingConfig(max_new_tokens=90)
    new, ranked = _ranked_generate(monkeypatch, model, prompts, vocab, sampling, seeds=[3, 4], **layout)
    old = baseline_generate(model, prompts, vocab, sampling, seeds=[3, 4], draw_from="counter", **layout)
    for b in range(2):
        assert torch.equal(new.ids[b], old.ids[b])
    _assert_same_candidates(new, old, ranked)


def test_same_tokens_as_the_former_loop_where_ties_reach_past_the_largest_k(tiny, prompts):
    """Image tokens whose scores tie in groups of 64 (equal output rows) with k at most 8: top-k keeps the
    whole tied group, as the reference does, and both loops draw from all of it (the former loop's draw
    listed only k_cap candidates, so it drew from 8 of the 64 where the new loop draws from all)."""
    import copy

    model, _, vocab = tiny
    tied = copy.deepcopy(model)
    image = vocab.is_image.nonzero()[:, 0]
    with torch.no_grad():
        head = tied.lm_head.weight
        head[image] = head[image[::64]].repeat_interleave(64, dim=0)
    sampling = SamplingConfig(max_new_tokens=40, image_top_k_max=8)
    layout = dict(image_grids=(1, 1), max_text_tokens=5, stop_after_image=True)
    new = generate(tied, prompts[:1], vocab, sampling, seeds=[3], **layout)
    old = baseline_generate(tied, prompts[:1], vocab, sampling, seeds=[3], draw_from="counter", **layout)
    assert (new.kept[0] == 64).sum() >= 16  # every image code drawn from a group of 64 tied scores
    assert torch.equal(new.ids[0], old.ids[0])


@pytest.mark.slow
def test_same_candidates_and_probabilities_as_the_former_loop_at_every_step(tiny, prompts, monkeypatch):
    """Feeding both loops the same tokens (the former loop with its own per-row torch generators):
    the rules keep the same candidates with the same probabilities at every step."""
    model, _, vocab = tiny
    sampling = SamplingConfig(max_new_tokens=90)
    sampled = generate(model, prompts, vocab, sampling, seeds=[5, 6], **PIPELINE)
    new, ranked = _ranked_generate(
        monkeypatch, model, prompts, vocab, sampling, teacher=sampled.ids, **PIPELINE
    )
    old = baseline_generate(model, prompts, vocab, sampling, teacher=sampled.ids, **PIPELINE)
    _assert_same_candidates(new, old, ranked)
    for b in range(2):
        assert len(new.kept[b]) == len(sampled.ids[b]) > 60
        torch.testing.assert_close(new.p_token[b], sampled.p_token[b], rtol=1e-5, atol=1e-9)
        assert (new.p_token[b] > 0).all()


@pytest.mark.slow
def test_batched_rows_equal_single_rows(tiny, prompts):
    model, _, vocab = tiny
    sampling = SamplingConfig(max_new_tokens=90)
    batched = generate(model, prompts, vocab, sampling, seeds=[7, 8], **PIPELINE)
    for b, prompt in enumerate(prompts):
        single = generate(model, [prompt], vocab, sampling, seeds=[7 + b], **PIPELINE)
        assert torch.equal(batched.ids[b], single.ids[0])


def test_static_cache_logits_equal_full_forward_logits(tiny, prompts):
    """Rows at different grammar positions in one batch (one still writing text, one inside its
    image): after every step, the conditional logits equal a full forward of the whole sequence and
    the unconditional logits a full forward of the open image alone, positions from 0."""
    model, _, vocab = tiny
    sampling = SamplingConfig(max_new_tokens=40)
    answer = generate(model, [prompts[0]], vocab, sampling, seeds=[1], **PIPELINE).ids[0]
    start = int((answer == vocab.image_start).nonzero()[0])
    rows = [prompts[0], torch.cat([prompts[1], answer[: start + 6]])]  # text phase / 3 codes into an image
    teacher = [answer, answer[start + 6 :]]
    with torch.inference_mode(), use_guided_attention(model):
        cache, d, rules = _start(model, rows, vocab, sampling, [0, 0], teacher, None, 512, False)
        for step in range(12):
            for b, (prompt, tokens) in enumerate(zip(rows, teacher, strict=True)):
                sequence = torch.cat([prompt, tokens[:step]])
                full = model(input_ids=sequence[None]).logits[0, -1]
                torch.testing.assert_close(d.logits[b], full, rtol=0, atol=1e-5)
                opened = (sequence == vocab.image_start).nonzero()
                if bool(d.state.open[b]):
                    image = sequence[int(opened[-1]) :]
                    full = model(input_ids=image[None]).logits[0, -1]
                    torch.testing.assert_close(d.logits[2 + b], full, rtol=0, atol=1e-5)
            _step(model, cache, d, rules, None)
    assert bool(d.state.open[1]) and int(d.state.n[1]) > 10


@pytest.mark.slow
def test_counter_draw_samples_the_softmax():
    """Chi-square over many seeds, and over many steps of one seed: the frequencies of a 6-token
    vocabulary match softmax(values / T); a dropped candidate is never drawn."""
    values = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, float("-inf")]]) / 0.9
    ids = torch.tensor([[11, 3, 7, 0, 5, 2]])
    expected = torch.softmax(values, -1)[0, :5].double()
    n = 20000
    by_seed = draw(
        values.expand(n, -1), ids.expand(n, -1), counter_uniform(torch.arange(n), 3, ids.expand(n, -1))
    )
    by_step = torch.cat(
        [draw(values, ids, counter_uniform(torch.tensor([42]), step, ids)) for step in range(n // 4)]
    )
    for tokens in (by_seed, by_step):
        counts = torch.stack([(tokens == i).sum() for i in ids[0, :5]]).double()
        assert int(counts.sum()) == len(tokens)  # token 2 (dropped) never drawn
        assert chisquare(counts.numpy(), (expected * len(tokens)).numpy()).pvalue > 1e-3


def test_counter_uniform_is_uniform_and_independent_of_the_batch():
    seeds = torch.tensor([0, 1, 2**40 + 5, -7])
    tokens = torch.arange(4096).expand(4, -1)
    u = counter_uniform(seeds, 9, tokens)
    assert ((u > 0) & (u < 1)).all()
    counts = torch.histc(u.float().flatten(), bins=16, min=0, max=1).double().numpy()
    assert chisquare(counts).pvalue > 1e-3
    assert torch.equal(u[2], counter_uniform(seeds[2:3], 9, tokens[:1])[0])  # rows do not interact


@pytest.mark.slow
def test_decoding_step_traces_as_one_graph(tiny, prompts):
    """torch.compile with fullgraph=True fails on any host synchronisation or data-dependent shape,
    the things a CUDA graph cannot hold; the traced step gives the eager step's tokens."""
    model, _, vocab = tiny
    sampling = SamplingConfig(max_new_tokens=30)
    outputs = []
    for step in (_step, torch.compile(_step, backend="eager", fullgraph=True, dynamic=False)):
        with torch.inference_mode(), use_guided_attention(model):
            cache, d, rules = _start(model, prompts, vocab, sampling, [1, 2], None, (2, 2), 3, True)
            for _ in range(6):
                step(model, cache, d, rules, None)
        outputs.append(d.out_ids[:, :6].clone())
    assert torch.equal(outputs[0], outputs[1])


def test_kv_cache_of_a_512_px_tile_on_the_7b():
    """PURE's 7B (32 layers, hidden 4096, bf16) restoring a 512 px tile: at most 6.5 GiB of cache."""
    config = ChameleonConfig(**tiny_backbone_config(4096, 11008, 32, 32))
    vocab = Vocab.from_names(synthetic_vocabulary(), bos=0)
    prompt, _ = conversation(tiny_tokenizer(), vocab, torch.zeros(64, 64, dtype=torch.long))
    steps = 512 + block_length(64, 64)  # restore.max_text_tokens + the answer's image block
    cond, uncond = cache_lengths(len(prompt), steps, 0, (16, 16))
    assert uncond == block_length(64, 64) - 1
    cache = GuidedKVCache(config, 1, cond, uncond, torch.bfloat16, torch.device("meta"))
    gib = cache.nbytes / 2**30
    former = 2 * 32 * 2 * 4096 * 2 * (len(prompt) + steps) / 2**30  # [cond; uncond] rows of equal length
    assert gib <= 6.5 < former
    assert math.isclose(gib, 2 * 32 * 4096 * 2 * (cond + uncond) / 2**30)


@pytest.mark.gpu
def test_cuda_graph_gives_the_eager_tokens_on_a_gpu(tiny, prompts):
    """On CUDA the captured step replays the eager step: the same tokens, row by row."""
    model, _, vocab = tiny
    model = model.to("cuda")
    sampling = SamplingConfig(max_new_tokens=90)
    cuda_prompts = [p.to("cuda") for p in prompts]
    eager = generate(model, cuda_prompts, vocab, sampling, seeds=[3, 4], cuda_graph=False, **PIPELINE)
    graph = generate(model, cuda_prompts, vocab, sampling, seeds=[3, 4], cuda_graph=True, **PIPELINE)
    model.to("cpu")
    for b in range(2):
        assert torch.equal(eager.ids[b], graph.ids[b])


def _on_fake_cuda(obj):
    """``obj`` (a tensor, the cache, the decode state, the rules, the drafts; nested dataclasses) with
    every tensor replaced by an empty one of the same shape, strides and dtype on the (fake) CUDA device."""
    if isinstance(obj, torch.Tensor):
        return torch.empty_strided(obj.shape, obj.stride(), dtype=obj.dtype, device="cuda")
    if isinstance(obj, GuidedKVCache):
        for part in obj.PARTS:
            setattr(obj, part, _on_fake_cuda(getattr(obj, part)))
        obj.scales = obj.scales and {part: _on_fake_cuda(s) for part, s in obj.scales.items()}
        return obj
    if isinstance(obj, Vocab):
        moved = Vocab.__new__(Vocab)
        moved.__dict__.update({key: _on_fake_cuda(value) for key, value in obj.__dict__.items()})
        return moved
    if dataclasses.is_dataclass(obj):
        fields = {f.name: _on_fake_cuda(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        if type(obj).__dataclass_params__.frozen:
            return dataclasses.replace(obj, **fields)
        for name, value in fields.items():
            setattr(obj, name, value)
    return obj


@pytest.mark.slow
@pytest.mark.skipif(
    not torch.backends.cuda.is_built(), reason="needs a CUDA build of PyTorch (no GPU needed)"
)
@pytest.mark.parametrize(("quantize", "kv_cache"), [("none", "model"), ("int8", "int8"), ("int4", "model")])
def test_captured_step_stays_on_the_device(monkeypatch, quantize, kv_cache):
    """What CUDA-graph capture replays (the step with ``limits=None``, and the speculative iteration at
    widths 1 and 9), run on a fake CUDA device (PyTorch's fake tensors, no GPU): a host read of a device
    value (``.item()``, ``bool()``, a data-dependent shape) or a host tensor mixed into device work (a copy
    to the device) raises there, as it breaks capture on a GPU. bf16 weights as on a GPU, quantised with
    the CUDA formats (int4 tile-packed), the KV cache as given. The kernels themselves need a GPU."""
    import bench_7b
    from torch._subclasses.fake_tensor import FakeTensorMode

    import pure.speculative as speculative
    from pure.quantize import quantize_decoder_

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *args, **kwargs: (9, 0))  # an H100/H200
    shape, dtype = (128, 256, 2, 2), torch.bfloat16
    vocab = Vocab.from_names(synthetic_vocabulary(), bos=0)
    lq = torch.randint(0, 16384, (8, 8), generator=torch.Generator().manual_seed(0))
    prompt, _ = conversation(tiny_tokenizer(), vocab, lq, "A cat.")
    prompt = torch.cat([prompt, torch.tensor([vocab.image_start, vocab.size_token(1), vocab.size_token(1)])])
    prompts, sampling = [prompt, prompt[3:]], SamplingConfig(max_new_tokens=60)
    cpu_model = bench_7b.build_model(*shape, "cpu", dtype)
    states = {}
    with torch.inference_mode(), use_guided_attention(cpu_model):  # the prefill runs for real, on the CPU
        for extra in (0, 9):
            cache, d, rules = _start(
                cpu_model,
                prompts,
                vocab,
                sampling,
                None,
                None,
                None,
                512,
                False,
                extra=extra,
                kv_cache=kv_cache,
            )
            drafts = speculative._new_drafts(d, vocab, "lq+jacobi", 8, prompts, rules, 0.0) if extra else None
            states[extra] = (cache, d, rules, drafts)

    with FakeTensorMode(allow_non_fake_inputs=True):
        model = bench_7b.build_model(*shape, "cuda", dtype)
        quantize_decoder_(model, quantize)
        with torch.inference_mode(), use_guided_attention(model):
            cache, d, rules, _ = (_on_fake_cuda(x) for x in states[0])
            _step(model, cache, d, rules, None)
            assert d.logits.device.type == "cuda" and d.logits.dtype == torch.float32
            cache, d, rules, drafts = (_on_fake_cuda(x) for x in states[9])
            speculative._first(d, drafts, rules)
            for width in (1, 9):
                speculative._iterate(model, cache, d, drafts, rules, width, None)


@pytest.mark.skipif(
    not torch.backends.cuda.is_built(), reason="needs a CUDA build of PyTorch (no GPU needed)"
)
def test_the_fake_cuda_device_catches_a_host_read():
    """The check above has teeth: a host read of a device value inside fake mode raises."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    host_read = "local_scalar_dense|[Dd]ata.dependent"
    with FakeTensorMode(allow_non_fake_inputs=True), pytest.raises(Exception, match=host_read):
        bool((torch.ones(3, device="cuda") > 0).any())
    with FakeTensorMode(allow_non_fake_inputs=True), pytest.raises(Exception, match="device"):
        torch.ones(3, device="cuda") + torch.ones(3)  # a host tensor in device work: a copy
