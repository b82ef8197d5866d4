"""Real-ESRGAN's second-order degradation, as a pure function of one HQ image and a generator.

    hq [3, H, W] in [0, 1]
      -> (unsharp mask)                               Real-ESRGAN degrades a sharpened copy
      -> blur(k1) -> resize(s1) -> noise -> JPEG      first order
      -> blur(k2, p=0.8) -> resize(s2 / scale) -> noise
      -> [resize to H/scale + sinc] and JPEG, in a random order
      -> round to 8 bits                              = lq [3, H/scale, W/scale] in [0, 1]

Every random choice is drawn from the caller's ``torch.Generator`` (never numpy's or Python's global
state), so one seed gives one LQ image whatever ran before, and every drawn value is returned in a
:class:`DegradationParams` (the labels in :mod:`pure.data.labels` are computed from it). The
distributions are those of basicsr's ``RealESRGANDataset`` and ``RealESRGANModel.feed_data``, and
the kernels come from basicsr's own (deterministic) kernel functions. Everything runs on the CPU,
where OpenCV's filters and JPEG codec are: the LQ image does not depend on the device.

Differences from basicsr's batched GPU path, all deliberate:

- one image at a time, so every image gets its own resize factors and modes (basicsr's batch shares
  them, which is why Real-ESRGAN needs a shuffling queue);
- JPEG is OpenCV's real codec at an integer quality (basicsr's ``add_jpg_compression`` passes a float
  quality, which OpenCV 5 rejects), where the GPU path uses the DiffJPEG approximation;
- filtering is OpenCV's ``filter2D`` on contiguous HWC arrays (basicsr's torch ``filter2D`` computes
  the same correlation with the same reflect border, but its ``view`` fails on the strided tensor that
  follows a JPEG round trip, and it is several times slower on the CPU);
- kernels are not zero-padded to 21 x 21 and the unsharp mask's 51 x 51 Gaussian runs as two 1-D
  passes: the same result (up to float rounding) for less work.

This is the one module of ``pure`` that imports basicsr.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from basicsr.data.degradations import (
    bivariate_Gaussian,
    bivariate_generalized_Gaussian,
    bivariate_plateau,
    circular_lowpass_kernel,
)
from torchvision.transforms.functional import rgb_to_grayscale

from pure.config import ConfigError, DegradationConfig, DegradationStageConfig

USM_RADIUS = 51
"""Side of the unsharp mask's Gaussian (basicsr's ``USMSharp(radius=50)``, made odd)."""
USM_WEIGHT = 0.5
"""Strength of the unsharp mask: ``sharp = hq + weight * (hq - blur(hq))``."""
USM_THRESHOLD = 10
"""Residuals below this many 8-bit levels are left unsharpened."""


@dataclass
class Blur:
    """One drawn blur kernel; unused fields are 0."""

    kind: str
    """iso, aniso, generalized_iso, generalized_aniso, plateau_iso, plateau_aniso or sinc."""
    size: int
    """Kernel side in pixels (odd)."""
    sigma_x: float = 0.0
    """Standard deviation along the kernel's first axis (pixels)."""
    sigma_y: float = 0.0
    """Standard deviation along its second axis (pixels)."""
    theta: float = 0.0
    """Rotation in radians."""
    beta: float = 0.0
    """Shape of generalised Gaussian and plateau kernels."""
    omega_c: float = 0.0
    """Cut-off frequency of a sinc kernel (radians per pixel; pi keeps everything)."""


@dataclass
class Resize:
    """One drawn resize."""

    direction: str
    """up, down or keep."""
    factor: float
    """The drawn factor (relative to the stage's reference size)."""
    mode: str
    """area, bilinear or bicubic."""
    size: list[int]
    """Output ``[height, width]``."""


@dataclass
class Noise:
    """One drawn noise."""

    kind: str
    """gaussian or poisson."""
    level: float
    """Gaussian sigma in 8-bit levels, or the Poisson scale."""
    gray: bool
    """The same noise in all three channels."""
    std: float
    """Standard deviation of the noise actually added, in 8-bit levels (before clipping)."""


@dataclass
class Stage:
    """What one order of the degradation drew."""

    blur: Blur | None
    """The kernel, or None when the stage did not blur."""
    resize: Resize
    """The resize."""
    noise: Noise
    """The noise."""
    jpeg_quality: int
    """The JPEG quality (the second stage's is the final JPEG)."""


@dataclass
class DegradationParams:
    """Every value :func:`degrade` drew for one image (JSON-ready through :meth:`to_dict`)."""

    scale: int
    """HQ side / LQ side."""
    hq_size: list[int]
    """``[height, width]`` of the HQ input."""
    usm_sharpen: bool
    """Whether the unsharp-masked HQ was degraded."""
    first: Stage
    """The first order."""
    second: Stage
    """The second order."""
    final_resize_mode: str
    """Mode of the resize to the LQ size."""
    final_sinc: Blur | None
    """The sinc kernel after that resize, or None."""
    sinc_before_jpeg: bool
    """Whether [resize + sinc] came before the last JPEG."""

    def to_dict(self) -> dict:
        """Plain nested dicts and lists (what ``index.jsonl`` stores)."""
        return asdict(self)


# ----------------------------------------------------------------------------- draws


def _rand(g: torch.Generator) -> float:
    return float(torch.rand((), generator=g, dtype=torch.float64))


def _uniform(g: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * _rand(g)


def _choice(g: torch.Generator, options: list, probs: list[float] | None = None):
    weights = torch.tensor(probs if probs is not None else [1.0] * len(options), dtype=torch.float64)
    if len(weights) != len(options) or weights.sum() <= 0:
        raise ConfigError(
            f"cannot draw from {options} with probabilities {probs}: fix the degradation config"
        )
    return options[int(torch.multinomial(weights, 1, generator=g))]


def _draw_beta(g: torch.Generator, beta_range: list[float]) -> float:
    """basicsr's rule: half the time below 1, half the time above (assumes low < 1 < high)."""
    return _uniform(g, beta_range[0], 1.0) if _rand(g) < 0.5 else _uniform(g, 1.0, beta_range[1])


def draw_blur(g: torch.Generator, stage: DegradationStageConfig, sizes: list[int]) -> Blur:
    """A kernel as ``RealESRGANDataset`` draws one: sinc with ``sinc_prob``, else a mixed kernel."""
    size = int(_choice(g, sizes))
    if size % 2 == 0:
        raise ConfigError(f"kernel size {size} is even: degradation.kernel_sizes must hold odd sizes")
    if _rand(g) < stage.sinc_prob:
        low = math.pi / 3 if size < 13 else math.pi / 5
        return Blur("sinc", size, omega_c=_uniform(g, low, math.pi))
    kind = _choice(g, list(stage.kernel_list), list(stage.kernel_prob))
    sigma_x = _uniform(g, *stage.blur_sigma)
    sigma_y, theta = sigma_x, 0.0
    if kind.endswith("aniso"):
        sigma_y = _uniform(g, *stage.blur_sigma)
        theta = _uniform(g, -math.pi, math.pi)
    beta = 0.0
    if kind.startswith("generalized"):
        beta = _draw_beta(g, stage.betag_range)
    elif kind.startswith("plateau"):
        beta = _draw_beta(g, stage.betap_range)
    return Blur(kind, size, sigma_x, sigma_y, theta, beta)


def kernel(blur: Blur) -> np.ndarray:
    """The normalised ``[size, size]`` float32 kernel of ``blur`` (basicsr's kernel functions)."""
    iso = not blur.kind.endswith("aniso")
    if blur.kind == "sinc":
        k = circular_lowpass_kernel(blur.omega_c, blur.size, pad_to=0)
    elif blur.kind.startswith("generalized"):
        k = bivariate_generalized_Gaussian(
            blur.size, blur.sigma_x, blur.sigma_y, blur.theta, blur.beta, isotropic=iso
        )
    elif blur.kind.startswith("plateau"):
        k = bivariate_plateau(blur.size, blur.sigma_x, blur.sigma_y, blur.theta, blur.beta, isotropic=iso)
    elif blur.kind in ("iso", "aniso"):
        k = bivariate_Gaussian(blur.size, blur.sigma_x, blur.sigma_y, blur.theta, isotropic=iso)
    else:
        raise ConfigError(
            f"unknown blur kernel {blur.kind!r}: use iso, aniso, generalized_*, plateau_* or sinc"
        )
    return np.asarray(k, dtype=np.float32)


def _draw_resize(
    g: torch.Generator, stage: DegradationStageConfig, modes: list[str]
) -> tuple[str, float, str]:
    direction = _choice(g, ["up", "down", "keep"], list(stage.resize_prob))
    factor = {
        "up": lambda: _uniform(g, 1.0, stage.resize_range[1]),
        "down": lambda: _uniform(g, stage.resize_range[0], 1.0),
        "keep": lambda: 1.0,
    }[direction]()
    return direction, factor, _choice(g, list(modes))


# ----------------------------------------------------------------------------- operations


def filter2d(image: torch.Tensor, kx: np.ndarray, ky: np.ndarray | None = None) -> torch.Tensor:
    """[1, 3, h, w] CPU float32 -> same, correlated with the 2-D kernel ``kx`` (or separable ``ky`` x ``kx``).

    OpenCV with reflect-101 borders: the same arithmetic as basicsr's ``filter2D`` (reflect padding,
    cross-correlation), several times faster on the CPU. The HWC copy also makes the array contiguous,
    which basicsr's ``filter2D`` needs after a JPEG round trip.
    """
    hwc = np.ascontiguousarray(image[0].permute(1, 2, 0).numpy())
    if ky is None:
        out = cv2.filter2D(hwc, -1, kx, borderType=cv2.BORDER_REFLECT_101)
    else:
        out = cv2.sepFilter2D(hwc, -1, kx, ky, borderType=cv2.BORDER_REFLECT_101)
    return torch.from_numpy(out.reshape(hwc.shape)).permute(2, 0, 1)[None]


def _resize(image: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    if min(size) < 1:
        raise ConfigError(
            f"a resize to {size} would leave no pixels: the HQ image is too small for this config"
        )
    return F.interpolate(image, size=size, mode=mode)


def usm_sharpen(image: torch.Tensor) -> torch.Tensor:
    """Real-ESRGAN's unsharp mask (basicsr ``USMSharp``): [1, 3, H, W] CPU float32 in [0, 1] -> same.

    The 51 x 51 Gaussian is separable, so it runs as a 51 x 1 and a 1 x 51 pass.
    """
    g1 = cv2.getGaussianKernel(USM_RADIUS, 0).astype(np.float32)
    residual = image - filter2d(image, g1, g1)
    mask = filter2d(((residual.abs() * 255) > USM_THRESHOLD).float(), g1, g1)
    sharp = (image + USM_WEIGHT * residual).clamp(0, 1)
    return mask * sharp + (1 - mask) * image


def _noise(
    g: torch.Generator, image: torch.Tensor, stage: DegradationStageConfig
) -> tuple[torch.Tensor, Noise]:
    """basicsr's ``random_add_{gaussian,poisson}_noise_pt`` for one [1, 3, h, w] CPU image, from ``g``."""
    gaussian = _rand(g) < stage.gaussian_noise_prob
    level = _uniform(g, *(stage.noise_range if gaussian else stage.poisson_scale_range))
    gray = _rand(g) < stage.gray_noise_prob
    cpu = image
    if gaussian:
        shape = (1, 1, *cpu.shape[2:]) if gray else cpu.shape
        noise = torch.randn(shape, generator=g) * level / 255.0
    else:
        if gray:
            cpu = rgb_to_grayscale(cpu)
        cpu = (cpu * 255).round().clamp(0, 255) / 255
        vals = 2 ** math.ceil(math.log2(len(torch.unique(cpu))))  # the image's grey levels, as basicsr
        noise = (torch.poisson(cpu * vals, generator=g) / vals - cpu) * level
    noise = noise.expand(image.shape)
    drawn = Noise("gaussian" if gaussian else "poisson", level, gray, float(noise.std()) * 255)
    return (image + noise).clamp(0, 1), drawn


def jpeg(image: torch.Tensor, quality: int) -> torch.Tensor:
    """OpenCV JPEG round trip at integer ``quality``: [1, 3, h, w] CPU in [0, 1] -> same, on 8-bit levels."""
    rgb = (image[0].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    ok, data = cv2.imencode(
        ".jpg", np.ascontiguousarray(rgb[:, :, ::-1]), [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)]
    )
    if not ok:
        raise RuntimeError(f"OpenCV could not JPEG-encode a {rgb.shape[1]}x{rgb.shape[0]} image")
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    return torch.from_numpy(np.ascontiguousarray(bgr[:, :, ::-1])).permute(2, 0, 1)[None].float() / 255.0


def _draw_quality(g: torch.Generator, stage: DegradationStageConfig) -> int:
    return int(round(_uniform(g, *stage.jpeg_range)))


# ----------------------------------------------------------------------------- settings

KERNEL_TYPES = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")
"""The blur kernels of ``kernel_list`` (basicsr's names; ``sinc`` is drawn by ``sinc_prob`` instead)."""
RESIZE_MODES = ("area", "bilinear", "bicubic", "nearest", "nearest-exact")
"""``torch.nn.functional.interpolate`` modes for images, usable in ``resize_modes``."""
JPEG_QUALITY = (1.0, 100.0)
"""The JPEG qualities OpenCV encodes (it clamps others silently)."""


def _check_range(key: str, values: list, low: float, high: float, around: float | None = None) -> None:
    if len(values) != 2 or not values[0] <= values[1]:
        raise ConfigError(f"{key}={list(values)}: expected [low, high] with low <= high")
    if values[0] < low or values[1] > high:
        raise ConfigError(f"{key}={list(values)}: must lie within [{low:g}, {high:g}]")
    if around is not None and not values[0] <= around <= values[1]:
        raise ConfigError(
            f"{key}={list(values)}: must hold {around:g} (one side is drawn below it, one above)"
        )


def _check_probabilities(key: str, values: list, count: int) -> None:
    if len(values) != count:
        raise ConfigError(f"{key}={list(values)}: expected {count} probabilities, one per option")
    if any(v < 0 for v in values) or sum(values) <= 0:
        raise ConfigError(f"{key}={list(values)}: probabilities must be >= 0 with a positive sum")


def check_degradation(cfg: DegradationConfig, prefix: str = "degradation.") -> None:
    """Refuse settings :func:`degrade` could not draw from or would silently change, before any image is
    read: probabilities outside [0, 1] or of the wrong length, reversed or impossible ranges, even kernel
    sizes, unknown kernels and resize modes, JPEG qualities outside 1-100. Raises :class:`ConfigError`
    (``key=value: why``). The rules are basicsr's ``RealESRGANDataset`` assumptions."""
    if not cfg.kernel_sizes or any(k < 1 or k % 2 == 0 for k in cfg.kernel_sizes):
        raise ConfigError(
            f"{prefix}kernel_sizes={list(cfg.kernel_sizes)}: expected odd sizes (e.g. [7, 9, 21])"
        )
    for mode in cfg.resize_modes or ["(none)"]:
        if mode not in RESIZE_MODES:
            modes = ", ".join(RESIZE_MODES)
            raise ConfigError(f"{prefix}resize_modes={list(cfg.resize_modes)}: {mode} is not one of {modes}")
    for name in ("final_sinc_prob", "sinc_before_jpeg_prob"):
        if not 0 <= getattr(cfg, name) <= 1:
            raise ConfigError(f"{prefix}{name}={getattr(cfg, name)}: a probability must lie in [0, 1]")
    for order in ("first", "second"):
        stage, key = getattr(cfg, order), f"{prefix}{order}."
        for name in ("blur_prob", "sinc_prob", "gaussian_noise_prob", "gray_noise_prob"):
            if not 0 <= getattr(stage, name) <= 1:
                raise ConfigError(f"{key}{name}={getattr(stage, name)}: a probability must lie in [0, 1]")
        unknown = [k for k in stage.kernel_list if k not in KERNEL_TYPES]
        if unknown or not stage.kernel_list:
            what = f"{unknown[0]} is not" if unknown else "expected at least one of"
            raise ConfigError(
                f"{key}kernel_list={list(stage.kernel_list)}: {what} one of {', '.join(KERNEL_TYPES)}"
            )
        _check_probabilities(f"{key}kernel_prob", stage.kernel_prob, len(stage.kernel_list))
        _check_probabilities(f"{key}resize_prob", stage.resize_prob, 3)  # up, down, keep
        _check_range(f"{key}blur_sigma", stage.blur_sigma, 1e-6, math.inf)
        _check_range(f"{key}betag_range", stage.betag_range, 1e-6, math.inf, around=1.0)
        _check_range(f"{key}betap_range", stage.betap_range, 1e-6, math.inf, around=1.0)
        _check_range(f"{key}resize_range", stage.resize_range, 1e-6, math.inf, around=1.0)
        _check_range(f"{key}noise_range", stage.noise_range, 0.0, math.inf)
        _check_range(f"{key}poisson_scale_range", stage.poisson_scale_range, 0.0, math.inf)
        _check_range(f"{key}jpeg_range", stage.jpeg_range, *JPEG_QUALITY)


# ----------------------------------------------------------------------------- the pipeline


def degrade(
    hq: torch.Tensor, cfg: DegradationConfig, generator: torch.Generator
) -> tuple[torch.Tensor, DegradationParams]:
    """Real-ESRGAN's second-order degradation of one image.

    Args:
        hq: ``[3, H, W]`` float in [0, 1], H and W multiples of ``cfg.scale``, on any device (the work
            runs on the CPU, where OpenCV's filters and JPEG codec are).
        cfg: the degradation settings (RealESRGAN_x4plus's by default).
        generator: a CPU ``torch.Generator``; every random draw comes from it, so the same generator
            state gives the same LQ image and parameters.

    Returns:
        ``lq``: ``[3, H / scale, W / scale]`` float32 in [0, 1], on 8-bit levels, on ``hq``'s device;
        and the drawn parameters.
    """
    if hq.ndim != 3 or hq.shape[0] != 3:
        raise ValueError(f"expected one RGB image [3, H, W], got shape {tuple(hq.shape)}")
    if generator.device.type != "cpu":
        raise ValueError(
            "degrade draws on the CPU: pass torch.Generator() (device cpu), not a CUDA generator"
        )
    s = int(cfg.scale)
    h, w = hq.shape[1:]
    if s < 1 or h % s or w % s:
        raise ValueError(f"HQ size {w}x{h} is not divisible by degradation.scale={cfg.scale}: crop it first")
    g = generator
    sizes = list(cfg.kernel_sizes)
    # Kernels are drawn first, as RealESRGANDataset does before the model applies them.
    blur1 = draw_blur(g, cfg.first, sizes) if _rand(g) < cfg.first.blur_prob else None
    blur2 = draw_blur(g, cfg.second, sizes) if _rand(g) < cfg.second.blur_prob else None
    sinc = None
    if _rand(g) < cfg.final_sinc_prob:
        sinc = Blur("sinc", int(_choice(g, sizes)), omega_c=_uniform(g, math.pi / 3, math.pi))

    out = hq.detach().float().cpu()[None]
    if cfg.usm_sharpen:
        out = usm_sharpen(out)
    stages = []
    for index, (stage, blur) in enumerate(((cfg.first, blur1), (cfg.second, blur2))):
        if blur is not None:
            out = filter2d(out, kernel(blur))
        direction, factor, mode = _draw_resize(g, stage, cfg.resize_modes)
        if index == 0:  # relative to the current size, like F.interpolate(scale_factor=...)
            size = (int(math.floor(out.shape[2] * factor)), int(math.floor(out.shape[3] * factor)))
        else:  # relative to the LQ size
            size = (int(h / s * factor), int(w / s * factor))
        out = _resize(out, size, mode)
        out, noise = _noise(g, out, stage)
        quality = _draw_quality(g, stage)
        if index == 0:
            out = jpeg(out, quality)
        stages.append(Stage(blur, Resize(direction, factor, mode, list(size)), noise, quality))

    final_mode = _choice(g, list(cfg.resize_modes))
    sinc_first = _rand(g) < cfg.sinc_before_jpeg_prob
    if not sinc_first:
        out = jpeg(out, stages[1].jpeg_quality)
    out = _resize(out, (h // s, w // s), final_mode)
    if sinc is not None:
        out = filter2d(out, kernel(sinc))
    if sinc_first:
        out = jpeg(out, stages[1].jpeg_quality)
    lq = ((out[0] * 255).round().clamp(0, 255) / 255).to(hq.device)
    params = DegradationParams(s, [h, w], cfg.usm_sharpen, stages[0], stages[1], final_mode, sinc, sinc_first)
    return lq, params
