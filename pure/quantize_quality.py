"""How far a quantised backbone's predictions move from the full-precision ones (the quality guard of
``backbone.quantize`` and ``restore.kv_cache``; ``benchmarks/quality_quantize.py`` prints it,
``tests/test_quantize.py`` and ``tests/test_kv_cache.py`` bound it).

Three measures, all on the CPU in float32 activations, on the deterministic backbone of the reference
fixtures (``../shared/reference``) and its stored CFG trajectory:

- **top-1 agreement**: the fraction of positions of a sequence where both models' logits have the same
  argmax over the whole vocabulary;
- **mean KL** (nats) of the processed next-token distribution over the trajectory's steps:
  guidance, grammar mask, entropy-adaptive top-k and temperature (SPEC section 5, the order of
  :func:`pure.generate._step`), ``KL(p_ref || p_quant)`` with both distributions taken over the
  candidates the reference model keeps (so a candidate the quantised model drops does not make it
  infinite; dropping shows in the next two measures);
- **same candidate count**: the steps where the quantised model's top-k keeps as many candidates as
  the stored trajectory does, and the mean fraction of the reference model's candidates it keeps.

The model's logits are taken from full forwards: conditional rows over the prompt and the trajectory,
unconditional rows over the open image from its start token, positions from 0. With an int8 KV cache
the forward's attention reads every key and value back from a :class:`pure.kv_cache.GuidedKVCache` that
stores them as int8: since each vector is quantised on its own, that is what token-by-token decoding
with ``restore.kv_cache: int8`` sees (tested against :func:`pure.generate.replay`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pure.config import SamplingConfig
from pure.kv_cache import CACHE_ARG, GuidedKVCache, KVWrite, use_guided_attention
from pure.sampling import (
    ImageState,
    adaptive_top_k,
    advance,
    entropy,
    guidance,
    image_grammar,
    initial_state,
    top_k_candidates,
)
from pure.tiny import det_state_dict, synthetic_vocabulary, write_backbone_checkpoint
from pure.vocab import Vocab


@dataclass
class Processed:
    """A trajectory of ``N`` steps under the sampling rules, as :func:`pure.generate._step` sees them.

    ``scores``: ``[N, V]`` fp32 after guidance and the grammar mask (before top-k); ``entropy``: ``[N]``
    nats; ``ids``: ``[N, K]`` top-k's fixed-size candidate list; ``values``: ``[N, K]`` their tempered
    scores, -inf where top-k drops them.
    """

    scores: torch.Tensor
    entropy: torch.Tensor
    ids: torch.Tensor
    values: torch.Tensor

    @property
    def kept(self) -> torch.Tensor:
        """``[N]`` int64: candidates kept at each step."""
        return torch.isfinite(self.values).sum(-1)

    @property
    def probs(self) -> torch.Tensor:
        """``[N, K]`` float64: the processed distribution over ``ids`` (0 for dropped candidates)."""
        return torch.softmax(self.values.double(), -1)

    def keeps(self, ids: torch.Tensor) -> torch.Tensor:
        """``[N, J]`` bool: whether each of ``ids`` ``[N, J]`` is one of this step's kept candidates."""
        kept = torch.zeros_like(self.scores, dtype=torch.bool).scatter_(
            1, self.ids, torch.isfinite(self.values)
        )
        return kept.gather(1, ids)


@dataclass
class QuantQuality:
    """The quality guard's numbers for one quantised model against the reference model."""

    top1_agreement: float
    """Fraction of positions, in [0, 1], whose argmax over the vocabulary is the reference's."""
    positions: int
    """Positions compared for ``top1_agreement``."""
    mean_kl: float
    """Mean over steps of ``KL(p_ref || p_quant)`` over the reference's candidates, nats (>= 0)."""
    same_count_steps: int
    """Steps whose candidate count equals the stored trajectory's."""
    steps: int
    """Steps of the trajectory."""
    candidate_overlap: float
    """Mean over steps of the fraction of the reference model's candidates the quantised model keeps."""


@dataclass
class Fixture:
    """The reference fixtures the guard runs on (``../shared/reference``, README sections 2 and 6)."""

    folder: Path
    """The deterministic backbone as a checkpoint folder (for :func:`pure.model.load_backbone`)."""
    ids: torch.Tensor
    """``[T]`` the backbone fixture's sequence (prompt, LQ block, answer, HQ block)."""
    prompt: torch.Tensor
    """``[L]`` the CFG trajectory's prompt, ending with the HQ image's start and size tokens."""
    tokens: torch.Tensor
    """``[N]`` the trajectory's tokens."""
    kept: torch.Tensor
    """``[N]`` candidates the reference's top-k kept at each step."""
    vocab: Vocab
    """The fixtures' synthetic vocabulary."""
    sampling: SamplingConfig
    """The trajectory's sampler settings."""


FIXTURE_FILES = (
    "backbone/config.json",
    "backbone/state_dict_shapes.json",
    "backbone/backbone.npz",
    "cfg/cfg_trajectory.json",
    "cfg/cfg_trajectory.npz",
)
"""The files of the fixture set that :func:`load_fixture` reads."""


def load_fixture(reference_dir: str | Path, folder: str | Path) -> Fixture:
    """Write the fixtures' deterministic backbone (seed of the CFG trajectory) to ``folder`` and read the
    backbone sequence and the CFG trajectory from ``reference_dir``."""
    reference_dir = Path(reference_dir)
    config = json.loads((reference_dir / "backbone" / "config.json").read_text(encoding="utf-8"))
    shapes = json.loads((reference_dir / "backbone" / "state_dict_shapes.json").read_text(encoding="utf-8"))
    meta = json.loads((reference_dir / "cfg" / "cfg_trajectory.json").read_text(encoding="utf-8"))
    trajectory = np.load(reference_dir / "cfg" / "cfg_trajectory.npz")
    backbone = np.load(reference_dir / "backbone" / "backbone.npz")
    return Fixture(
        folder=write_backbone_checkpoint(folder, config, det_state_dict(shapes, meta["weights_seed"])),
        ids=torch.from_numpy(backbone["input_ids"]).long(),
        prompt=torch.from_numpy(trajectory["prompt_ids"]).long(),
        tokens=torch.from_numpy(trajectory["step_token"]).long(),
        kept=torch.from_numpy(trajectory["step_topk_n_finite"]).long(),
        vocab=Vocab.from_names(synthetic_vocabulary(), bos=0),
        sampling=SamplingConfig(
            cfg_scale=meta["guidance_scale"], temperature=meta["temperature"], text_top_k=meta["text_top_k"]
        ),
    )


def logits(model, ids: torch.Tensor, kv_cache: str = "model") -> torch.Tensor:
    """``[T, V]`` fp32 logits at every position of ``ids`` ``[T]``, positions from 0: a plain forward, or
    with ``kv_cache="int8"`` one whose attention reads the keys and values back from an int8 cache."""
    if kv_cache == "model":
        return model(input_ids=ids[None]).logits[0].float()
    n, device = len(ids), model.device
    cache = GuidedKVCache(model.config, 1, n, 0, model.dtype, device, int8=True)
    cache.plan = KVWrite(1, cond_cols=torch.arange(n, device=device), cond_limit=n)
    positions = torch.arange(n, device=device)[None]
    with use_guided_attention(model):
        out = model(
            input_ids=ids[None], position_ids=positions, use_cache=True, kv_cache=cache, **{CACHE_ARG: cache}
        )
    return out.logits[0].float()


def _states(prompt: torch.Tensor, tokens: torch.Tensor, vocab: Vocab) -> ImageState:
    """The grammar state before each of ``tokens`` ``[N]`` fed after ``prompt``, stacked to ``[N]``."""
    state, rows = initial_state([prompt], vocab), []
    for token in tokens:
        rows.append(state)
        state = advance(state, token.view(1), vocab)
    return ImageState(*(torch.cat([getattr(s, f) for s in rows]) for f in ("open", "n", "h", "w")))


@torch.inference_mode()
def processed(
    model,
    prompt: torch.Tensor,
    tokens: torch.Tensor,
    vocab: Vocab,
    sampling: SamplingConfig,
    kv_cache: str = "model",
) -> Processed:
    """The processed next-token distribution before each of ``tokens`` ``[N]`` fed after ``prompt``
    ``[L]``, whose last image must be open (its start token in the prompt), as in the stored trajectory.
    ``kv_cache``: ``restore.kv_cache`` (:func:`logits`)."""
    states = _states(prompt, tokens, vocab)
    if not bool(states.open[0]):
        raise ValueError("the prompt must end inside an image (its start token and size tokens)")
    sequence = torch.cat([prompt, tokens])[None]
    start, first = int((prompt == vocab.image_start).nonzero()[-1]), len(prompt) - 1
    n = len(tokens)
    cond = logits(model, sequence[0, :-1], kv_cache)[first : first + n]
    scores = cond
    if sampling.cfg_scale != 1.0:
        uncond = logits(model, sequence[0, start:-1], kv_cache)[first - start : first - start + n]
        scores = torch.where(states.in_body[:, None], guidance(cond, uncond, sampling.cfg_scale), cond)
    scores = image_grammar(scores, states, vocab)
    h = entropy(scores)
    k = adaptive_top_k(
        h, states.open, sampling.text_top_k, sampling.image_top_k_min, sampling.image_top_k_max
    )
    values, ids = top_k_candidates(scores, k, max(sampling.image_top_k_max, sampling.text_top_k))
    return Processed(scores, h, ids, values / sampling.temperature)


def kl_on_reference_candidates(
    reference: Processed, quantized: Processed, temperature: float
) -> torch.Tensor:
    """``[N]`` ``KL(p_ref || q)`` in nats, where ``q`` is the softmax of the quantised model's tempered
    scores over the reference's candidates (the processed distribution restricted to them)."""
    kept = torch.isfinite(reference.values)
    q_scores = quantized.scores.gather(1, reference.ids).double() / temperature
    log_q = torch.log_softmax(q_scores.masked_fill(~kept, float("-inf")), -1)
    log_p = torch.log_softmax(reference.values.double(), -1)
    return torch.where(kept, log_p.exp() * (log_p - log_q), 0.0).sum(-1)


@torch.inference_mode()
def _argmax(model, ids: torch.Tensor, kv_cache: str = "model") -> torch.Tensor:
    """``[T]``: the argmax over the vocabulary of ``model``'s logits at every position of ``ids`` ``[T]``."""
    return logits(model, ids, kv_cache).argmax(-1)


class QualityGuard:
    """The reference model's side of the guard, computed once; :meth:`measure` compares a quantised model."""

    def __init__(self, reference, fixture: Fixture) -> None:
        self.fixture = fixture
        self.reference = processed(reference, fixture.prompt, fixture.tokens, fixture.vocab, fixture.sampling)
        self.argmax = _argmax(reference, fixture.ids)

    def measure(self, quantized, kv_cache: str = "model") -> QuantQuality:
        """Top-1 agreement over the fixture's sequence; the processed distributions along its trajectory;
        candidate counts against the stored ones. ``kv_cache``: how ``quantized`` stores its KV cache."""
        fixture, ref = self.fixture, self.reference
        quant = processed(
            quantized, fixture.prompt, fixture.tokens, fixture.vocab, fixture.sampling, kv_cache
        )
        both = quant.keeps(ref.ids) & torch.isfinite(ref.values)
        overlap = both.sum(-1).double() / ref.kept.double()
        return QuantQuality(
            top1_agreement=float((_argmax(quantized, fixture.ids, kv_cache) == self.argmax).double().mean()),
            positions=len(fixture.ids),
            mean_kl=float(kl_on_reference_candidates(ref, quant, fixture.sampling.temperature).mean()),
            same_count_steps=int((quant.kept == fixture.kept).sum()),
            steps=len(fixture.tokens),
            candidate_overlap=float(overlap.mean()),
        )
