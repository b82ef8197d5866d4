"""How likely a checkpoint finds the drafts of ``restore.speculative: lq``, by replay.

For each image (a file or every image of a folder): the image is prepared as ``scripts/infer.py``
does (upsampled, tiled, VQ-encoded into PURE's prompt), the model writes its answer text for the
first ``--tiles`` tiles (greedy, as in restoration), and then the text followed by the tile's own LQ
block is replayed (:func:`pure.speculative.lq_draft_probability`). Printed per tile and overall: the
mean probability the processed distribution gives each LQ code (an LQ draft's acceptance
probability where the drafts before it were accepted), the share of codes above 0.5, and the tokens
per forward that windows of ``--draft-len`` such drafts would give (an estimate). The mean decides
whether LQ drafts pay off on those weights.

    python benchmarks/lq_draft_probability.py -i photo.png --models models          # the released model
    python benchmarks/lq_draft_probability.py -i data/samples --config configs/tiny.yaml --tiles 1
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

from pure.config import InferConfig, load_config
from pure.download import locate
from pure.generate import generate
from pure.images import IMAGE_SUFFIXES, read_image
from pure.pipeline import Restorer
from pure.speculative import expected_run, lq_draft_probability
from pure.vocab import GRID_PX


def answer_text(restorer: Restorer, prompt: torch.Tensor) -> torch.Tensor:
    """The model's answer text for ``prompt`` (ids before its image opens), written as restoration does."""
    settings, side = restorer.settings, restorer.settings.tile // GRID_PX
    sampling = dataclasses.replace(restorer.sampling, max_new_tokens=settings.max_text_tokens + 1)
    ids = generate(
        restorer.model,
        [prompt],
        restorer.vocab,
        sampling,
        image_grids=(side, side),
        max_text_tokens=settings.max_text_tokens,
    ).ids[0]
    opened = (ids == restorer.vocab.image_start).nonzero()
    return ids[: int(opened[0])] if len(opened) else ids


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-i", "--input", required=True, help="an image or a folder of images")
    parser.add_argument("--config", help="YAML file overriding the defaults (as scripts/infer.py)")
    parser.add_argument("--models", default="", help="the folder scripts/download.py wrote")
    parser.add_argument("--tiles", type=int, default=4, help="tiles per image (the first ones)")
    parser.add_argument("--draft-len", type=int, default=8, help="window of the tokens-per-forward estimate")
    parser.add_argument("--json", help="also write the per-tile numbers here")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    args = parser.parse_args()
    cfg = load_config(InferConfig, args.config, args.overrides + [f"models={json.dumps(args.models)}"])
    restorer = Restorer.from_config(locate(cfg, cfg.models))
    folder = Path(args.input)
    paths = (
        sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if folder.is_dir()
        else [folder]
    )
    if not paths:
        parser.error(f"no images in {folder}")
    rows = []
    for path in paths:
        tiles = restorer.prepare_tiles(read_image(path).rgb)
        boxes = tiles.boxes[: args.tiles]
        for tile, prompt in enumerate(restorer.prompts(tiles, boxes, restorer.settings.caption)):
            text = answer_text(restorer, prompt)
            p = lq_draft_probability(restorer.model, prompt, text, restorer.vocab, restorer.sampling)
            codes = p[:, :-1]
            rows.append(
                {
                    "image": str(path),
                    "tile": tile,
                    "mean_p": float(codes.mean()),
                    "share_above_half": float((codes > 0.5).double().mean()),
                    "tokens_per_forward": expected_run(p, args.draft_len),
                }
            )
            print(
                f"{path.name} tile {tile}: mean p(LQ code) {rows[-1]['mean_p']:.3f}, "
                f"{100 * rows[-1]['share_above_half']:.1f}% above 0.5, about "
                f"{rows[-1]['tokens_per_forward']:.2f} tokens per forward with {args.draft_len} drafts"
            )
    mean = sum(row["mean_p"] for row in rows) / len(rows)
    print(f"overall: mean p(LQ code) {mean:.3f} over {len(rows)} tile(s)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
