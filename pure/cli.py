"""Command-line entry points: ``scripts/infer.py`` (restore a file or folder)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from pure.config import ConfigError, InferConfig, load_config
from pure.files import write_atomic, write_text_atomic
from pure.model import CheckpointError
from pure.pipeline import Restoration, Restorer, read_image
from pure.vocab import VocabError
from pure.vq import VQCheckpointError, VQCheckpointNotFoundError

ALPHA_NOTE = "RGB restored from the image composited on white; alpha upscaled bicubically and re-attached"
FLAG_TO_KEY = {
    "outscale": "restore.outscale",
    "tile": "restore.tile",
    "tile_overlap": "restore.tile_overlap",
    "batch_size": "restore.batch_size",
    "color_fix": "restore.color_fix",
    "caption": "restore.caption",
    "seed": "sampling.seed",
    "cfg_scale": "sampling.cfg_scale",
    "temperature": "sampling.temperature",
    "model": "backbone.source",
    "adapter": "backbone.adapter",
    "vq": "vq.source",
    "dtype": "dtype",
    "device": "device",
}


def infer_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scripts/infer.py",
        description="Restore low-quality images with PURE: perceive the degradation, describe the content, "
        "restore the image. Settings come from the schema in pure/config.py, then --config, then the flags, "
        "then trailing key=value overrides (e.g. sampling.max_new_tokens=6000).",
    )
    p.add_argument("-i", "--input", required=True, help="an image file or a folder of images")
    p.add_argument(
        "-o", "--output", required=True, help="folder for the restored images and their .json sidecars"
    )
    p.add_argument(
        "--config", help="YAML file overriding the defaults (e.g. configs/tiny.yaml, configs/pure_x4.yaml)"
    )
    p.add_argument(
        "--outscale", type=float, help="output scale relative to the input, any float > 0 (default 4)"
    )
    p.add_argument("--tile", type=int, help="model tile size in pixels, a multiple of 32 (default 512)")
    p.add_argument("--tile-overlap", type=int, help="overlap between tiles in output pixels (default 64)")
    p.add_argument("--batch-size", type=int, help="tiles generated together in one batch (default 1)")
    p.add_argument("--suffix", default="", help="appended to output names: NAME_SUFFIX.ext (default: none)")
    p.add_argument(
        "--ext",
        choices=["auto", "png", "jpg"],
        default="auto",
        help="output format; auto keeps jpg for jpg inputs and writes png otherwise (always png "
        "when the input has alpha)",
    )
    p.add_argument("--seed", type=int, help="sampling seed; tile i uses seed + i (default 0)")
    p.add_argument(
        "--color-fix",
        choices=["wavelet", "adain", "none"],
        help="colour correction against the bicubic upsampled input (default wavelet)",
    )
    p.add_argument("--cfg-scale", type=float, help="classifier-free guidance scale (default 0.8; 1 disables)")
    p.add_argument("--temperature", type=float, help="sampling temperature (default 0.9)")
    p.add_argument(
        "--caption", help="your own description (or whole text answer); the model continues from it"
    )
    p.add_argument("--model", help="backbone: Hugging Face repo id or local folder (default nonwhy/PURE)")
    p.add_argument(
        "--adapter", help="LoRA adapter folder trained with scripts/train.py, merged into the backbone"
    )
    p.add_argument(
        "--vq",
        help="VQ tokenizer: .pt file or repo_id:filename (default FoundationVision/LlamaGen:vq_ds8_c2i.pt)",
    )
    p.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], help="GPU dtype (CPU runs float32)")
    p.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--skip-existing", action="store_true", help="skip inputs whose output already exists")
    mode.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument(
        "--save-entropy-map",
        action="store_true",
        help="also write NAME_entropy.png: each code's sampling entropy (white = 10 nats)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "overrides", nargs="*", metavar="key=value", help="config overrides, e.g. restore.tile=256"
    )
    return p


def list_inputs(path: Path) -> list[Path]:
    """The file itself, or the visible files of a folder in name order."""
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    raise FileNotFoundError(f"input {path} does not exist")


def output_path(source: Path, folder: Path, suffix: str, ext: str, has_alpha: bool) -> Path:
    """Where the restoration of ``source`` goes."""
    if has_alpha or ext == "png" or (ext == "auto" and source.suffix.lower() not in (".jpg", ".jpeg")):
        extension = ".png"
    else:
        extension = ".jpg"
    return folder / f"{source.stem}{'_' + suffix if suffix else ''}{extension}"


def save_outputs(result: Restoration, source: Path, target: Path, sidecar: dict, entropy_map: bool) -> None:
    """The image, its JSON sidecar and optionally the entropy map, each written atomically."""
    image = (
        result.image if target.suffix == ".png" or result.image.mode == "RGB" else result.image.convert("RGB")
    )
    kwargs = {"quality": 95} if target.suffix == ".jpg" else {}
    write_atomic(
        target, lambda p: image.save(p, format="JPEG" if target.suffix == ".jpg" else "PNG", **kwargs)
    )
    write_text_atomic(target.with_suffix(".json"), json.dumps(sidecar, indent=2))
    if entropy_map:
        values = np.clip(result.entropy_map / 10.0, 0, 1) * 255
        heat = Image.fromarray(values.astype(np.uint8), "L")
        write_atomic(target.with_name(target.stem + "_entropy.png"), lambda p: heat.save(p, format="PNG"))


def infer_main(argv: list[str] | None = None) -> int:
    """Restore every input; returns the exit code (1 when any file failed, 2 when nothing could start)."""
    args = infer_parser().parse_args(argv)
    overrides = [
        f"{FLAG_TO_KEY[k]}={json.dumps(v) if isinstance(v, str) else v}"
        for k, v in vars(args).items()
        if k in FLAG_TO_KEY and v is not None
    ]
    try:
        cfg = load_config(InferConfig, args.config, overrides + args.overrides)
        inputs = list_inputs(Path(args.input))
    except (ConfigError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        restorer = Restorer.from_config(cfg)
    except (CheckpointError, VocabError, VQCheckpointError, VQCheckpointNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    failed = 0
    bar = tqdm(inputs, desc="images", unit="img", disable=args.no_progress)
    for source in bar:
        bar.set_postfix_str(source.name)
        try:
            image, alpha = read_image(source)
            target = output_path(source, out_dir, args.suffix, args.ext, alpha is not None)
            if target.exists() and args.skip_existing:
                tqdm.write(f"skipped {source}: {target} exists")
                continue
            if target.exists() and not args.overwrite:
                raise FileExistsError(f"{target} exists; pass --overwrite to replace it or --skip-existing")
            tokens = tqdm(desc="tokens", unit="tok", leave=False, disable=args.no_progress)
            result = restorer.restore(image, alpha=alpha, on_step=tokens.update)
            tokens.close()
            sidecar = {
                "input": str(source),
                "output": str(target),
                "input_size": list(image.size),
                "output_size": list(result.image.size),
                "degradation": result.degradation,
                "description": result.description,
                "tile_answers": result.tile_answers,
                "seed": result.seed,
                "model": restorer.model_revision,
                "vq": cfg.vq.source,
                "adapter": cfg.backbone.adapter or None,
                "settings": restorer.settings_dict(),
                "timings_s": result.timings,
                "alpha": ALPHA_NOTE if alpha is not None else None,
            }
            save_outputs(result, source, target, sidecar, args.save_entropy_map)
        except Exception as err:  # one bad file must not stop the run
            failed += 1
            message = str(err) if str(source) in str(err) else f"{source}: {err}"
            tqdm.write(f"failed: {message}", file=sys.stderr)
    print(
        f"{len(inputs) - failed} of {len(inputs)} images restored into {out_dir}"
        + (f"; {failed} failed" if failed else "")
    )
    return 1 if failed else 0
