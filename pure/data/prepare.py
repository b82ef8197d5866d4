"""Pre-tokenisation: HQ folders -> degraded LQ -> VQ codes -> PURE token sequences in shards.

For every HQ image (``prepare(cfg)``, or ``scripts/prepare_data.py --config ...``):

    read -> shrink + crop to hq_size -> degrade (its own generator: seed + path) -> label
    LQ bicubic-upsampled to hq_size; VQ codes of LQ and HQ
    conversation(instruction + LQ | "{label} {description}" + HQ) -> ids, labels

The output folder holds::

    shards/RRR-NNNNNN.safetensors   ids, labels (int32, all examples concatenated), offsets (int64, n + 1)
    journal/rank-RRR.jsonl         one record per example, appended after its shard is on disk
    index.jsonl                    the current record of every source image, in source order
    prepare.yaml                   the settings that produced the tokens

A record names its shard and row, the source file (path, size, mtime, sha256), the crop, every drawn
degradation parameter, the two severities, the label sentence, the description and the lengths.
Reruns are resumable: an image whose record matches its file (same size and mtime, or else the same
sha256) and its description is skipped, so an interrupted run continues where its last shard ended
and a second run does nothing; a changed file or description is done again and its new record wins.
Under ``accelerate launch`` every process takes every n-th pending image and writes its own shards
and journal; the main process writes ``index.jsonl`` at the end.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from tqdm import tqdm

from pure.config import CaptionConfig, PrepareConfig, to_yaml
from pure.data.captions import (
    append_manifest,
    check_descriptions,
    describe_missing,
    load_captioner,
    read_manifest,
)
from pure.data.degradations import DegradationParams, check_degradation, degrade
from pure.data.labels import Label, label_from_params
from pure.errors import DiskFullError, PureError, error_reason, from_here, run_from_hint, worker_died
from pure.files import (
    can_write_in,
    file_sha256,
    folders_to_make,
    lock_folder,
    out_of_space,
    remove_empty,
    write_atomic,
    write_text_atomic,
)
from pure.images import ImageReadError, is_image_name, read_header, read_image
from pure.vq import image_to_tensor

TOKEN_FIELDS = ("hq_size", "shrink", "crop", "seed", "degradation", "labels", "vq", "backbone")
"""Settings that change the tokens: a rerun into the same folder must keep them."""


class PrepareError(PureError, RuntimeError):
    """The inputs or the output folder do not allow preparing data."""


@dataclass(frozen=True)
class Source:
    """One HQ image file."""

    key: str
    """Path relative to its HQ folder, with ``/`` separators (the manifest key)."""
    path: Path
    """The file."""
    size: int
    """Bytes."""
    mtime_ns: int
    """Modification time."""


@dataclass
class Pair:
    """One degraded training pair before tokenisation."""

    source: Source
    """Where the HQ image came from."""
    sha256: str
    """Checksum of the source file."""
    hq: torch.Tensor
    """``[3, S, S]`` float32 in [0, 1]."""
    lq: torch.Tensor
    """``[3, S / scale, S / scale]`` float32 in [0, 1], on 8-bit levels."""
    crop: list[int]
    """``[top, left, size]`` of the crop in the (shrunk) image."""
    params: DegradationParams
    """The drawn degradation."""
    label: Label
    """Its severities and sentence."""


@dataclass
class Summary:
    """What one run did (counts over all processes)."""

    prepared: int = 0
    """Images tokenised in this run."""
    up_to_date: int = 0
    """Images whose record was already current."""
    skipped: list[str] = field(default_factory=list)
    """``path: reason`` of every image that could not be used."""
    examples: int = 0
    """Records in ``index.jsonl`` after the run."""


# ----------------------------------------------------------------------------- sources


def list_sources(hq_dirs: list[str]) -> list[Source]:
    """Image files under ``hq_dirs`` (recursively, hidden files skipped), sorted by key."""
    if not hq_dirs:
        raise PrepareError("no HQ folders: set hq_dirs in the config or pass --hq-dir")
    for folder in map(Path, hq_dirs):
        if folder.is_file():
            raise PrepareError(
                f"HQ folder {from_here(folder)} is a file; pass the folder that holds the images"
            )
        if not folder.is_dir():
            raise PrepareError(
                f"HQ folder {from_here(folder)} does not exist: pass --hq-dir DIR (or hq_dirs=[DIR])"
                + run_from_hint(folder)
            )
    resolved = [Path(folder).resolve() for folder in hq_dirs]
    for i, inner in enumerate(resolved):
        for j, outer in enumerate(resolved):
            if i != j and inner.is_relative_to(outer) and (inner != outer or i > j):
                how = "is listed twice" if inner == outer else f"is inside {hq_dirs[j]}"
                raise PrepareError(
                    f"HQ folder {hq_dirs[i]} {how}: its images would be prepared twice (HQ folders are "
                    f"searched recursively); list only {hq_dirs[j]}"
                )
    found: dict[str, Source] = {}
    for folder in map(Path, hq_dirs):
        for path in sorted(folder.rglob("*")):
            rel = path.relative_to(folder)
            if not is_image_name(path) or any(p.startswith(".") for p in rel.parts):
                continue
            key = rel.as_posix()
            if key in found:
                raise PrepareError(
                    f"{found[key].path} and {path} have the same key {key!r}: descriptions and "
                    "records are keyed by the path inside an HQ folder; rename one"
                )
            stat = path.stat()
            found[key] = Source(key, path, stat.st_size, stat.st_mtime_ns)
    if not found:
        raise PrepareError(f"no images (files of a format Pillow reads) in {', '.join(hq_dirs)}")
    return [found[key] for key in sorted(found)]


def _usable(path: Path, hq_size: int) -> bool:
    """Whether the file is a still image the reader takes, at least ``hq_size`` on its shorter side (reads the
    header only): what is not is skipped with a warning, so it needs no description."""
    try:
        return min(read_header(path).size) >= hq_size
    except ImageReadError:
        return False


def image_generator(seed: int, key: str) -> torch.Generator:
    """The generator of one image: it depends on the seed and the key only, never on the processing order."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


# ----------------------------------------------------------------------------- one pair


def crop_square(
    image: Image.Image, size: int, shrink: bool, mode: str, generator: torch.Generator
) -> tuple[Image.Image, list[int]]:
    """A ``size`` x ``size`` crop of ``image`` -> (crop, ``[top, left, size]``).

    With ``shrink`` the image is first halved (box filter) while both sides stay >= 2 * size, then
    resized (bicubic) so its short side is ``size``.
    """
    if mode not in ("random", "center"):
        raise ValueError(f"crop must be random or center, got {mode!r}")
    if min(image.size) < size:
        raise ValueError(f"{image.width}x{image.height} is smaller than hq_size={size}")
    if shrink:
        while min(image.size) >= 2 * size:
            image = image.resize((image.width // 2, image.height // 2), Image.BOX)
        scale = size / min(image.size)
        image = image.resize(
            (max(size, round(image.width * scale)), max(size, round(image.height * scale))), Image.BICUBIC
        )
    spare_h, spare_w = image.height - size, image.width - size
    if mode == "random":
        top, left = (int(torch.randint(0, n + 1, (), generator=generator)) for n in (spare_h, spare_w))
    else:
        top, left = spare_h // 2, spare_w // 2
    return image.crop((left, top, left + size, top + size)), [top, left, size]


def make_pair(source: Source, cfg: PrepareConfig) -> Pair:
    """Read, crop, degrade and label one image; ``ValueError`` when the image cannot be used."""
    image = read_image(source.path).rgb
    generator = image_generator(cfg.seed, source.key)
    crop, box = crop_square(image, cfg.hq_size, cfg.shrink, cfg.crop, generator)
    hq = torch.from_numpy(np.asarray(crop, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()
    lq, params = degrade(hq, cfg.degradation, generator)
    return Pair(source, file_sha256(source.path), hq, lq, box, params, label_from_params(params, cfg.labels))


def vq_inputs(pair: Pair) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's view of a pair: (LQ bicubic-upsampled to the HQ size, HQ), each [3, S, S] in [-1, 1]."""
    size = pair.hq.shape[-1]
    lq = Image.fromarray((pair.lq * 255).round().byte().permute(1, 2, 0).numpy())
    hq = Image.fromarray((pair.hq * 255).round().byte().permute(1, 2, 0).numpy())
    return image_to_tensor(lq.resize((size, size), Image.BICUBIC)), image_to_tensor(hq)


class _Pairs(torch.utils.data.Dataset):
    """Pairs made in DataLoader workers; a failure comes back as ``(source, message)``."""

    def __init__(self, sources: list[Source], cfg: PrepareConfig) -> None:
        self.sources, self.cfg = sources, cfg

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, i: int) -> Pair | tuple[Source, str]:
        try:
            return make_pair(self.sources[i], self.cfg)
        except (ValueError, OSError) as err:  # image errors start with the path; others get it
            message, path = str(err), str(self.sources[i].path)
            return self.sources[i], message if message.startswith(path) else f"{path}: {message}"


# ----------------------------------------------------------------------------- shards and records


def read_journals(out_dir: Path) -> dict[str, dict]:
    """key -> latest record over all journals, keeping only records whose shard exists."""
    records: dict[str, dict] = {}
    for journal in sorted((out_dir / "journal").glob("*.jsonl")):
        for line in journal.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by an interruption: its example is redone
                continue
            if record["key"] not in records or record["written"] >= records[record["key"]]["written"]:
                records[record["key"]] = record
    return {k: r for k, r in records.items() if (out_dir / "shards" / r["shard"]).is_file()}


def is_current(record: dict | None, source: Source, description: str) -> bool:
    """Whether ``record`` holds ``source`` with ``description`` (hashing only when size or mtime moved)."""
    if record is None or record["description"] != description:
        return False
    if (record["size"], record["mtime_ns"]) == (source.size, source.mtime_ns):
        return True
    return record["size"] == source.size and record["sha256"] == file_sha256(source.path)


class ShardWriter:
    """Buffers examples of one process; :meth:`flush` writes a shard, then its journal lines."""

    def __init__(self, out_dir: Path, rank: int, shard_size: int) -> None:
        self.out_dir, self.rank, self.shard_size = out_dir, rank, shard_size
        self.ids: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []
        self.records: list[dict] = []
        (out_dir / "shards").mkdir(parents=True, exist_ok=True)
        (out_dir / "journal").mkdir(parents=True, exist_ok=True)

    def add(self, ids: torch.Tensor, labels: torch.Tensor, record: dict) -> None:
        self.ids.append(ids.to(torch.int32))
        self.labels.append(labels.to(torch.int32))
        self.records.append(record)
        if len(self.records) >= self.shard_size:
            self.flush()

    def _next_name(self) -> str:
        taken = [
            int(p.stem.split("-")[1])
            for p in (self.out_dir / "shards").glob(f"{self.rank:03d}-*.safetensors")
        ]
        return f"{self.rank:03d}-{max(taken, default=-1) + 1:06d}.safetensors"

    def flush(self) -> None:
        if not self.records:
            return
        name = self._next_name()
        lengths = torch.tensor([0] + [len(x) for x in self.ids])
        tensors = {"ids": torch.cat(self.ids), "labels": torch.cat(self.labels), "offsets": lengths.cumsum(0)}
        # the shard exists whole or not at all
        write_atomic(
            self.out_dir / "shards" / name,
            lambda temp: save_file(tensors, str(temp), metadata={"format": "pure-shard-v1"}),
        )
        with (self.out_dir / "journal" / f"rank-{self.rank:03d}.jsonl").open("a", encoding="utf-8") as f:
            for row, record in enumerate(self.records):
                f.write(json.dumps({**record, "shard": name, "row": row, "written": time.time_ns()}) + "\n")
        self.ids, self.labels, self.records = [], [], []


def write_index(out_dir: Path, sources: list[Source], descriptions: dict[str, str]) -> int:
    """Write ``index.jsonl``: the record of every source whose record is current (:func:`is_current`: a
    file changed since, and not prepared again because it no longer reads, is left out), in order; return
    the count."""
    records = read_journals(out_dir)
    lines = [
        json.dumps(records[s.key]) + "\n"
        for s in sources
        if is_current(records.get(s.key), s, descriptions.get(s.key, ""))
    ]
    write_text_atomic(out_dir / "index.jsonl", "".join(lines))
    return len(lines)


def check_settings(out_dir: Path, cfg: PrepareConfig) -> None:
    """Refuse to add tokens made with other settings to ``out_dir``; record the settings on first use (and
    again while nothing is prepared there: a refused or empty run does not lock the folder)."""
    from omegaconf import OmegaConf

    saved = out_dir / "prepare.yaml"
    if (reason := can_write_in(out_dir, keep=True)) is not None:  # /proc/x, a read-only disk: before any work
        raise PrepareError(f"out_dir={out_dir} cannot be written ({reason}); choose another")
    index, prepared = out_dir / "index.jsonl", bool(read_journals(out_dir))
    if not saved.is_file() and (prepared or (index.is_file() and index.stat().st_size)):
        raise PrepareError(
            f"out_dir={out_dir} holds {'journal/' if prepared else 'index.jsonl'} but no "
            "prepare.yaml: not written by prepare_data.py, or its settings were lost, so new tokens could "
            "not be checked against the old; choose another out_dir, or delete that folder to start again"
        )
    if saved.is_file() and prepared:
        old = read_prepare_settings(saved)
        new = OmegaConf.to_container(OmegaConf.structured(cfg))
        old, new = old | token_models(old), new | token_models(new)  # vq, backbone: by kind, not path
        changed = [name for name in TOKEN_FIELDS if old.get(name) != new.get(name)]
        if changed:
            raise PrepareError(
                f"{out_dir} was prepared with other {', '.join(changed)} settings (see {saved}); "
                "use a new out_dir, or delete that folder to start again"
            )
    else:
        write_text_atomic(saved, to_yaml(cfg))


def read_prepare_settings(path: Path) -> dict:
    """The settings a ``prepare.yaml`` records, as plain containers. Raises :class:`PrepareError` (one line
    naming it) when it is not a YAML mapping."""
    from omegaconf import OmegaConf

    try:
        settings = OmegaConf.to_container(OmegaConf.load(path))
    except Exception as err:  # YAML's parser and scanner errors, a file that cannot be read
        raise PrepareError(f"{path} cannot be read ({error_reason(err)}); restore it") from err
    if not isinstance(settings, dict):
        raise PrepareError(f"{path} is not the settings prepare_data.py writes (a YAML mapping); restore it")
    return settings


def token_models(settings: dict) -> dict:
    """What of a config's ``vq`` and ``backbone`` sections decides the tokens: whether each is the tiny random
    model (its text tokenizer and VQ differ from the released ones), a tiny VQ's seed, and the VQ's
    architecture. Not where the weights lie: a ``--models`` folder and the hub cache give the same file
    other paths."""
    vq, backbone = settings.get("vq") or {}, settings.get("backbone") or {}
    tiny_vq = vq.get("source") == "tiny"
    return {
        "vq": {"tiny": tiny_vq} | {k: v for k, v in vq.items() if k != "source" and (tiny_vq or k != "seed")},
        "backbone": {"tiny": backbone.get("source") == "tiny"},
    }


def check_shards_match(shards: Path, vq: object, backbone: object) -> None:
    """Refuse training on shards whose ``prepare.yaml`` records another VQ or text tokenizer than the
    training config's ``vq`` and ``backbone`` (dataclasses): their codes and ids would mean other pixels
    and words to this model. Shards without a ``prepare.yaml`` are not checked. Raises
    :class:`PrepareError`."""
    from omegaconf import OmegaConf

    saved = shards / "prepare.yaml"
    if not saved.is_file():
        return
    made = token_models(read_prepare_settings(saved))
    here = token_models(OmegaConf.to_container(OmegaConf.create({"vq": vq, "backbone": backbone})))
    for section in ("vq", "backbone"):
        if made[section] != here[section]:
            differ = sorted(
                k
                for k in made[section].keys() | here[section].keys()
                if made[section].get(k) != here[section].get(k)
            )
            if "tiny" in differ:  # the tiny random model against released weights: its source says it all
                differ = ["source"]
            names = ", ".join(f"{section}.{k}" for k in differ) + (
                " differ" if len(differ) > 1 else " differs"
            )
            raise PrepareError(
                f"data.shards={shards} was prepared with another {section} ({names}; see {saved}): "
                f"its tokens would mean other {'pixels' if section == 'vq' else 'words'} to this model; "
                f"prepare the data again with this config's {section} settings, or train with those"
            )


# ----------------------------------------------------------------------------- the run


def check_manifest(caption: CaptionConfig, flag: str = "") -> None:
    """Refuse a ``caption.manifest`` that is a folder, or that does not exist while no ``caption.model``
    will write it (a typo would drop every description). ``flag``: the flag that set it (``--manifest``),
    which the error then names as the user typed it; else the key. Raises :class:`PrepareError`."""
    if not caption.manifest:
        return
    key, sep = (flag, " ") if flag else ("caption.manifest", "=")
    shown = f"{key}{sep}{from_here(caption.manifest)}"
    if Path(caption.manifest).is_dir():
        raise PrepareError(
            f"{shown} is a folder; pass the descriptions file (.jsonl or .csv) in it, "
            f"e.g. {key}{sep}DIR/captions.jsonl"
        )
    if not caption.model and not Path(caption.manifest).is_file():
        raise PrepareError(
            f"{shown} does not exist; pass the descriptions file (.jsonl or .csv), or set caption.model "
            "to have a model write it"
        )


def _descriptions(sources: list[Source], cfg: PrepareConfig, state, progress: bool) -> dict[str, str]:
    """Descriptions of ``sources`` from the manifest, after the named model described the missing ones.

    Every process describes every n-th missing image into its own part file next to the manifest; the
    main process then appends the parts to the manifest (also parts left by an interrupted run).
    """
    caption = cfg.caption
    check_manifest(caption)
    if not caption.manifest:
        if caption.model:
            raise PrepareError(
                "caption.model is set but caption.manifest is not: name the file that caches the descriptions"
            )
        return {}
    manifest = Path(caption.manifest)
    parts = lambda: sorted(manifest.parent.glob(f"{manifest.stem}.part-*.jsonl"))  # noqa: E731

    def merge() -> None:
        if state.is_main_process:
            for part in parts():
                append_manifest(manifest, read_manifest(part))
                part.unlink()
        state.wait_for_everyone()

    merge()
    if caption.model:
        known = read_manifest(manifest)
        missing = [s for s in sources if not known.get(s.key)][state.process_index :: state.num_processes]
        if missing:
            target = (
                manifest
                if state.num_processes == 1
                else (manifest.parent / f"{manifest.stem}.part-{state.process_index:03d}.jsonl")
            )
            captioner = load_captioner(caption, device=str(state.device))
            describe_missing(
                {s.key: s.path for s in missing}, target, captioner, caption.batch_size, progress
            )
        state.wait_for_everyone()
        merge()
    return read_manifest(manifest)


def _record(pair: Pair, description: str, ids: torch.Tensor, labels: torch.Tensor) -> dict:
    source = pair.source
    return {
        "key": source.key,
        "source": str(source.path),
        "size": source.size,
        "mtime_ns": source.mtime_ns,
        "sha256": pair.sha256,
        "crop": pair.crop,
        "degradation": pair.params.to_dict(),
        "blur": pair.label.blur,
        "noise": pair.label.noise,
        "label": pair.label.text,
        "description": description,
        "length": len(ids),
        "prompt_length": int((labels < 0).sum()),
    }


def prepare(cfg: PrepareConfig, progress: bool = True) -> Summary:
    """Bring ``cfg.out_dir`` up to date with ``cfg.hq_dirs`` (see the module docstring)."""
    from accelerate import PartialState

    for key, value, unset in (
        ("backbone.adapter", cfg.backbone.adapter, ""),
        ("backbone.quantize", cfg.backbone.quantize, "none"),
    ):
        if value != unset:
            raise PrepareError(
                f"{key}={value}: scripts/prepare_data.py reads only the backbone's tokenizer, never its "
                f"weights; leave {key} unset (it applies to scripts/infer.py)"
            )
    state = PartialState(cpu=cfg.device == "cpu")  # several CPU processes (torchrun) then talk over gloo
    main = state.is_main_process
    if cfg.hq_size % 32 or cfg.hq_size % cfg.degradation.scale:
        raise PrepareError(f"hq_size={cfg.hq_size} must be a multiple of 32 and of degradation.scale")
    check_degradation(cfg.degradation)
    out_dir = Path(cfg.out_dir)
    sources = list_sources(list(cfg.hq_dirs))
    made = folders_to_make(out_dir)
    release = lambda: None  # noqa: E731 - the out_dir lock the main process takes
    # one run per folder: a second run's shards would take the first's names, its journal the first's rows
    # (taken where out_dir can be made; check_settings says why where it cannot)
    if main and can_write_in(out_dir, keep=True) is None:
        if (release := lock_folder(out_dir)) is None:
            raise PrepareError(
                f"out_dir={out_dir} is in use by another prepare_data.py run (started twice?): wait for "
                "it to end, then run the command again (it adds what the first did not), or choose another "
                "out_dir"
            )
    try:
        if main:
            check_settings(out_dir, cfg)
        summary = _bring_up_to_date(sources, cfg, state, progress)
    except BaseException as err:  # a failure (or Ctrl-C) before any example was written leaves nothing behind
        if main and not read_journals(out_dir):
            forget_settings(out_dir, made)
        then = "run the same command again (images in complete shards are kept)"
        if died := worker_died(err, "workers", cfg.workers, then):
            raise died from err
        if isinstance(err, Exception) and out_of_space(err, out_dir):
            raise DiskFullError(
                f"no space left on the device of out_dir={out_dir} ({type(err).__name__}); free space, then "
                "run the same command again (images in complete shards are kept)"
            ) from err
        raise
    finally:
        release()
    if main and not read_journals(out_dir):  # every image skipped: nothing to lock the settings to
        forget_settings(out_dir, made)
    return summary


def forget_settings(out_dir: Path, made: list[Path]) -> None:
    """Remove the ``prepare.yaml`` of a run that wrote no example, its empty shard and journal folders, and
    the folders the run ``made`` (:func:`pure.files.folders_to_make`) when nothing else is in them."""
    (out_dir / "prepare.yaml").unlink(missing_ok=True)
    if (out_dir / "index.jsonl").is_file() and not (out_dir / "index.jsonl").stat().st_size:
        (out_dir / "index.jsonl").unlink()  # an earlier run's empty index (every image skipped)
    remove_empty([out_dir / "shards", out_dir / "journal", *made])


def _bring_up_to_date(sources: list[Source], cfg: PrepareConfig, state, progress: bool) -> Summary:
    """The work of :func:`prepare` after its checks: descriptions, then the pending images as shards."""
    from accelerate.utils import gather_object

    from pure.model import backbone_folder, load_text_side, pick_device
    from pure.sequence import conversation
    from pure.vq import load_vq

    rank, world, main = state.process_index, state.num_processes, state.is_main_process
    out_dir = Path(cfg.out_dir)
    state.wait_for_everyone()
    descriptions = _descriptions(sources, cfg, state, progress and main)
    records = read_journals(out_dir)
    pending = [s for s in sources if not is_current(records.get(s.key), s, descriptions.get(s.key, ""))]
    # files that are not images, or are smaller than hq_size, are skipped later (a warning): no description
    check_descriptions([s.key for s in pending if _usable(s.path, cfg.hq_size)], descriptions, cfg.caption)
    mine = pending[rank::world]
    summary = Summary(up_to_date=len(sources) - len(pending))

    skipped: list[str] = []
    if mine:
        # auto and cuda mean this process's own device under accelerate (cuda:<local rank>)
        device = pick_device(cfg.device, default=state.device)
        if cfg.device == "cuda":
            device = state.device
        tokenizer, vocab = load_text_side(backbone_folder(cfg.backbone))
        vq = load_vq(cfg.vq.source, device=device, cfg=cfg.vq)
        writer = ShardWriter(out_dir, rank, cfg.shard_size)
        loader = torch.utils.data.DataLoader(
            _Pairs(mine, cfg), batch_size=cfg.batch_size, collate_fn=list, num_workers=cfg.workers
        )
        bar = tqdm(
            total=len(mine),
            desc=f"preparing (process {rank + 1}/{world})",
            unit="img",
            bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_noinv_fmt}]",
            disable=not (progress and main),
        )
        for batch in loader:
            pairs = [item for item in batch if isinstance(item, Pair)]
            for _source, message in (item for item in batch if not isinstance(item, Pair)):
                skipped.append(message)
                tqdm.write(f"warning: skipped {message}")
            if pairs:
                lq, hq = (torch.stack(x) for x in zip(*map(vq_inputs, pairs), strict=True))
                codes = vq.encode(torch.cat([lq, hq])).cpu()
                for i, pair in enumerate(pairs):
                    description = descriptions.get(pair.source.key, "")
                    answer = f"{pair.label.text} {description}".strip()
                    ids, labels = conversation(tokenizer, vocab, codes[i], answer, codes[len(pairs) + i])
                    writer.add(ids, labels, _record(pair, description, ids, labels))
            bar.update(len(batch))
        writer.flush()
        bar.close()
    summary.prepared = len(mine) - len(skipped)
    state.wait_for_everyone()
    if world > 1:
        counts = gather_object([(summary.prepared, skipped)])
        summary.prepared = sum(c[0] for c in counts)
        skipped = [s for c in counts for s in c[1]]
    summary.skipped = skipped
    if main:
        summary.examples = write_index(out_dir, sources, descriptions)
    return summary
