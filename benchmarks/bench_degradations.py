"""Images per second of pure's degradation against basicsr's own Real-ESRGAN path, same HQ images, CPU.

The baseline is what Real-ESRGAN training runs, as a plain loop over single images: the kernels as
``RealESRGANDataset.__getitem__`` draws them (numpy/random global state, padded to 21 x 21), then the
degradation of ``RealESRGANModel.feed_data`` (USMSharp, ``filter2D``, ``F.interpolate``,
``random_add_*_noise_pt``, DiffJPEG) with RealESRGAN_x4plus's options. Ours: :func:`pure.data.degrade`
with the same options (OpenCV filtering and JPEG, a separable unsharp mask, one explicit generator).
Both produce a 128 px LQ image from a 512 px HQ image.

    python benchmarks/bench_degradations.py [--hq ../shared/data/realsr-mini/hr] [--repeats 3]
"""

from __future__ import annotations

import argparse
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from basicsr.data.degradations import (
    circular_lowpass_kernel,
    random_add_gaussian_noise_pt,
    random_add_poisson_noise_pt,
    random_mixed_kernels,
)
from basicsr.utils import DiffJPEG, USMSharp
from basicsr.utils.img_process_util import filter2D

from pure.config import DegradationConfig, DegradationStageConfig
from pure.data.degradations import degrade
from pure.images import read_image

KERNEL_RANGE = [2 * v + 1 for v in range(3, 11)]


def basicsr_kernel(stage: DegradationStageConfig) -> torch.Tensor:
    """One blur kernel as RealESRGANDataset draws it, zero-padded to 21 x 21."""
    size = random.choice(KERNEL_RANGE)
    if np.random.uniform() < stage.sinc_prob:
        omega_c = np.random.uniform(np.pi / 3, np.pi) if size < 13 else np.random.uniform(np.pi / 5, np.pi)
        k = circular_lowpass_kernel(omega_c, size, pad_to=False)
    else:
        k = random_mixed_kernels(
            stage.kernel_list,
            stage.kernel_prob,
            size,
            stage.blur_sigma,
            stage.blur_sigma,
            [-math.pi, math.pi],
            stage.betag_range,
            stage.betap_range,
            noise_range=None,
        )
    pad = (21 - size) // 2
    return torch.FloatTensor(np.pad(k, ((pad, pad), (pad, pad))))


def basicsr_stage(out: torch.Tensor, stage: DegradationStageConfig, size) -> torch.Tensor:
    """feed_data's resize and noise of one order (``size``: a scale factor or an output size)."""
    direction = random.choices(["up", "down", "keep"], stage.resize_prob)[0]
    scale = {
        "up": lambda: np.random.uniform(1, stage.resize_range[1]),
        "down": lambda: np.random.uniform(stage.resize_range[0], 1),
        "keep": lambda: 1,
    }[direction]()
    mode = random.choice(["area", "bilinear", "bicubic"])
    if isinstance(size, tuple):
        out = F.interpolate(out, size=(int(size[0] * scale), int(size[1] * scale)), mode=mode)
    else:
        out = F.interpolate(out, scale_factor=scale, mode=mode)
    if np.random.uniform() < stage.gaussian_noise_prob:
        return random_add_gaussian_noise_pt(
            out, sigma_range=stage.noise_range, clip=True, rounds=False, gray_prob=stage.gray_noise_prob
        )
    return random_add_poisson_noise_pt(
        out, scale_range=stage.poisson_scale_range, gray_prob=stage.gray_noise_prob, clip=True, rounds=False
    )


def basicsr_degrade(
    gt: torch.Tensor, cfg: DegradationConfig, jpeger: DiffJPEG, usm: USMSharp
) -> torch.Tensor:
    """[1, 3, H, W] -> [1, 3, H/4, W/4]: RealESRGANDataset kernels + RealESRGANModel.feed_data."""
    kernel1, kernel2 = basicsr_kernel(cfg.first), basicsr_kernel(cfg.second)
    if np.random.uniform() < cfg.final_sinc_prob:
        sinc = torch.FloatTensor(
            circular_lowpass_kernel(
                np.random.uniform(np.pi / 3, np.pi), random.choice(KERNEL_RANGE), pad_to=21
            )
        )
    else:
        sinc = torch.zeros(21, 21)
        sinc[10, 10] = 1
    h, w = gt.shape[2:]
    s = cfg.scale
    out = filter2D(usm(gt), kernel1[None])
    out = basicsr_stage(out, cfg.first, None)
    out = jpeger(out.clamp(0, 1), quality=out.new_zeros(1).uniform_(*cfg.first.jpeg_range))
    if np.random.uniform() < cfg.second.blur_prob:
        out = filter2D(out.contiguous(), kernel2[None])  # basicsr's view fails on the JPEG output otherwise
    out = basicsr_stage(out, cfg.second, (h / s, w / s))
    quality = out.new_zeros(1).uniform_(*cfg.second.jpeg_range)
    mode = random.choice(["area", "bilinear", "bicubic"])
    if np.random.uniform() < 0.5:
        out = filter2D(F.interpolate(out, size=(h // s, w // s), mode=mode), sinc[None])
        out = jpeger(out.clamp(0, 1), quality=quality)
    else:
        out = jpeger(out.clamp(0, 1), quality=quality)
        out = filter2D(F.interpolate(out, size=(h // s, w // s), mode=mode).contiguous(), sinc[None])
    return ((out * 255.0).round().clamp(0, 255) / 255.0).contiguous()


def images_per_second(run, images: list[torch.Tensor], repeats: int) -> float:
    run(images[0])  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        for image in images:
            run(image)
    return repeats * len(images) / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hq", default=str(Path(__file__).resolve().parents[2] / "shared/data/realsr-mini/hr"))
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    paths = sorted(Path(args.hq).glob("*.png"))
    images = [
        torch.from_numpy(np.asarray(read_image(p).rgb, dtype=np.float32) / 255).permute(2, 0, 1).contiguous()
        for p in paths
    ]
    images = [x[:, : x.shape[1] // 4 * 4, : x.shape[2] // 4 * 4] for x in images]
    cfg = DegradationConfig()
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    jpeger, usm = DiffJPEG(differentiable=False), USMSharp()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        base = images_per_second(lambda x: basicsr_degrade(x[None], cfg, jpeger, usm), images, args.repeats)
        ours = images_per_second(lambda x: degrade(x, cfg, generator), images, args.repeats)
    size = "x".join(map(str, images[0].shape[1:]))
    print(
        f"{len(images)} HQ images of {size} px, {args.repeats} repeats, "
        f"CPU with {torch.get_num_threads()} threads"
    )
    print(f"basicsr Real-ESRGAN path: {base:6.2f} images/s")
    print(f"pure.data.degrade:        {ours:6.2f} images/s")
    print(f"ratio (ours / basicsr):   {ours / base:6.2f}x")


if __name__ == "__main__":
    main()
