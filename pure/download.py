"""Every weight file a run needs: which hub files, whether they are on this machine, and how to get them.

A run names its weights by hub source (``backbone.source: nonwhy/PURE``, ``vq.source:
FoundationVision/LlamaGen:vq_ds8_c2i.pt``, ``tokenizer``). Before anything loads, :func:`locate`
finds each one in the models folder (``models=DIR``, written by ``scripts/download.py``), else in
the Hugging Face cache, else downloads it; whatever cannot be had is reported in one
:class:`WeightsMissingError` that lists every missing file and the commands that fetch them all.

A models folder mirrors repo ids: ``DIR/nonwhy/PURE/`` (a model folder) and
``DIR/FoundationVision/LlamaGen/vq_ds8_c2i.pt`` (a single file).
"""

from __future__ import annotations

import functools
import os
import re
import socket
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from pure.config import with_value
from pure.errors import PureError, from_here

T = TypeVar("T")
TOKENIZER_FILES = [
    "config.json",
    "tokenizer*",
    "special_tokens_map.json",
    "text_tokenizer.json",
    "*.model",
    "vocab*",
    "merges.txt",
    "added_tokens.json",
]
"""Every file a tokenizer may be made of, and config.json (whose ``vocabulary_map`` may name image tokens)."""
CHECKPOINT_FILES = [*TOKENIZER_FILES, "*.safetensors", "*.safetensors.index.json"]
"""What a model folder needs: weights, config and tokenizer files (no other weights)."""
CAPTIONER_FILES = [*CHECKPOINT_FILES, "*.json", "*.jinja", "*.txt", "*.tiktoken"]
"""What an image-text-to-text model folder needs besides weights and tokenizer: processor, chat template
and generation configs (``*.json``, ``chat_template.jinja``)."""


class WeightsMissingError(PureError, FileNotFoundError):
    """Some weights a run needs are neither in the models folder, nor cached, nor downloadable."""


@dataclass(frozen=True)
class HubWeights:
    """One thing to fetch from the Hugging Face hub: a whole model folder, or one file of a repo."""

    key: str
    """The config key that names it (``backbone.source``, ``vq.source``, ``tokenizer``)."""
    repo: str
    """The repo id."""
    filename: str = ""
    """The file, for a single-file source; empty for a folder (the files ``patterns`` match)."""
    revision: str = "main"
    """Branch, tag or commit."""
    patterns: tuple[str, ...] = tuple(CHECKPOINT_FILES)
    """Files of a folder source: a whole model, or only its tokenizer (:data:`TOKENIZER_FILES`)."""
    optional: bool = False
    """Needed only by some runs (the captioning model: only for images the manifest lacks). :func:`locate`
    takes it from the models folder when it is there and otherwise leaves the source to its own loader."""

    @property
    def source(self) -> str:
        """The value the config holds: ``repo`` or ``repo:filename``."""
        return f"{self.repo}:{self.filename}" if self.filename else self.repo

    def local(self, models: Path) -> Path:
        """Where it lies in a models folder."""
        return models / self.repo / self.filename if self.filename else models / self.repo

    def present(self, models: Path) -> bool:
        """Whether the models folder holds it: the file, or a folder with config.json (and weights, when
        they are wanted)."""
        path = self.local(models)
        if self.filename:
            return path.is_file()
        weights = ("model.safetensors", "model.safetensors.index.json")
        wanted = "*.safetensors" in self.patterns
        return (path / "config.json").is_file() and (not wanted or any((path / w).is_file() for w in weights))

    def command(self, models: Path) -> str:
        """The ``hf download`` command that puts it into ``models``."""
        revision = f" --revision {self.revision}" if self.revision != "main" else ""
        if self.filename:
            return f"hf download {self.repo} {self.filename}{revision} --local-dir {models / self.repo}"
        include = " ".join(f'--include "{pattern}"' for pattern in self.patterns)
        return f"hf download {self.repo}{revision} {include} --local-dir {self.local(models)}"

    def fetch(self, local_dir: Path | None = None) -> Path:
        """Download it (into ``local_dir``, or the Hugging Face cache, where a cached copy is used as is).
        When the hub cannot be reached (:func:`hub_reachable`) only a cached copy is used, at once, without
        huggingface_hub's retries (half a minute of "Retrying ..." lines before the same failure)."""
        from huggingface_hub import hf_hub_download, snapshot_download

        target: dict = {"local_dir": str(local_dir)} if local_dir is not None else {}
        if not hub_reachable():
            target["local_files_only"] = True
        if self.filename:
            return Path(hf_hub_download(self.repo, self.filename, revision=self.revision, **target))
        return Path(
            snapshot_download(self.repo, revision=self.revision, allow_patterns=list(self.patterns), **target)
        )


@functools.cache
def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a connection to the Hugging Face endpoint opens within ``timeout`` seconds (asked once per
    process). False when ``HF_HUB_OFFLINE`` is set; True behind a proxy (``HTTPS_PROXY`` and the like),
    which only the proxy can answer."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urllib.parse.urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def _is_repo_id(source: str) -> bool:
    return source.count("/") == 1 and not source.startswith((".", "/", "~")) and not Path(source).exists()


def parse_source(source: str, key: str = "") -> HubWeights:
    """``repo`` (a model folder) or ``repo:filename`` (one file) as :class:`HubWeights`. A page or file URL
    of the hub is refused with the source it means (``https://huggingface.co/nonwhy/PURE``: ``nonwhy/PURE``).
    """
    url = re.match(
        r"https?://(?:www\.)?(?:huggingface\.co|hf\.co)/([^/]+/[^/]+)(?:/(?:resolve|blob)/[^/]+/(.+))?/?$",
        source,
    )
    if url:
        meant = url[1] + (f":{url[2]}" if url[2] else "")
        raise PureError(f"{source!r} is a web address; give the repo id it names: {meant}")
    repo, colon, filename = source.partition(":")
    if repo.startswith((".", "/", "~")) or Path(source).exists():
        raise PureError(
            f"{source!r} is a path on this machine, not a Hugging Face repo id: it needs no download"
        )
    if colon and not filename:
        raise PureError(f"{source!r} names no file after ':'; write {repo} (the whole folder) or {repo}:FILE")
    if repo.count("/") != 1:
        raise PureError(f"{source!r} is not a Hugging Face repo id (owner/name) or repo_id:filename")
    return HubWeights(key or source, repo, filename)


def hub_weights(cfg, backbone_weights: bool = True) -> list[HubWeights]:
    """The hub sources a config names (``backbone``, ``vq``, for training ``tokenizer``, for data
    preparation ``caption.model``); local paths and ``tiny`` need nothing. ``backbone_weights=False``:
    only the backbone's tokenizer files (data preparation writes text with it, it loads no weights)."""
    revision = cfg.backbone.revision
    found = []
    if _is_repo_id(cfg.backbone.source):
        patterns = tuple(CHECKPOINT_FILES if backbone_weights else TOKENIZER_FILES)
        found.append(HubWeights("backbone.source", cfg.backbone.source, revision=revision, patterns=patterns))
    tokenizer = getattr(cfg, "tokenizer", "")
    if tokenizer and _is_repo_id(tokenizer):
        found.append(HubWeights("tokenizer", tokenizer, patterns=tuple(TOKENIZER_FILES)))
    repo, sep, filename = cfg.vq.source.partition(":")
    if sep and repo and filename and not Path(cfg.vq.source).exists():
        found.append(HubWeights("vq.source", repo, filename))
    captioner = getattr(getattr(cfg, "caption", None), "model", "")
    if captioner and _is_repo_id(captioner):
        found.append(HubWeights("caption.model", captioner, patterns=tuple(CAPTIONER_FILES), optional=True))
    return found


def offline_note() -> str:
    """`` (HF_HUB_OFFLINE is set)`` when the hub is off, naming the variable that turns it off, for a
    could-not-obtain message; "" when it is on. Read as huggingface_hub reads them: the first of
    ``HF_HUB_OFFLINE`` and ``TRANSFORMERS_OFFLINE`` that is not empty, on when 1, on, yes or true in any
    case (``HF_HUB_OFFLINE=no`` or ``=0`` is off)."""
    name = next((n for n in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE") if os.environ.get(n)), None)
    return f" ({name} is set)" if name and os.environ[name].upper() in ("1", "ON", "YES", "TRUE") else ""


def missing_message(missing: list[HubWeights], models: Path) -> str:
    """One message listing every missing file with the commands that fetch them all."""
    lines = [
        f"the weights this run needs are not on this machine and could not be downloaded{offline_note()}:"
    ]
    lines += [f"  {w.key}: {w.source}{_incomplete(w, models)}{_not_local(w)}" for w in missing]
    lines += [
        f"On a machine with internet access, fetch them into one folder ({models}/):",
        f"  python scripts/download.py {models}" + "".join(f" {w.source}" for w in missing),
        "or with the Hugging Face CLI:",
        *(f"  {w.command(models)}" for w in missing),
        f"then copy {models}/ to this machine and pass --models {models} (or models={models}).",
    ]
    return "\n".join(lines)


def _not_local(weights: HubWeights) -> str:
    """For a folder source read as a repo id whose first part is a folder here (``models/PURE`` with a
    ``models/`` folder: meant as a local path), a note that it is no folder here either."""
    owner = Path(weights.repo).parent
    if weights.filename or not owner.is_dir():
        return ""
    return f" (read as a repo id: there is no folder {weights.repo} here, though {owner}/ is)"


def _incomplete(weights: HubWeights, models: Path) -> str:
    """For a folder source whose folder is in ``models`` but lacks files: which, as a note."""
    path = weights.local(models)
    if weights.filename or not path.is_dir():
        return ""
    lacking = [] if (path / "config.json").is_file() else ["config.json"]
    if "*.safetensors" in weights.patterns and not any(path.glob("model.safetensors*")):
        lacking.append("model.safetensors or model.safetensors.index.json")
    if not lacking:
        return ""
    return f" ({path} is there but has no {' and no '.join(lacking)}: an interrupted download?)"


def locate(cfg: T, models: str | Path = "", backbone_weights: bool = True) -> T:
    """``cfg`` with every hub source replaced by a local path: from ``models`` when it holds it, else
    from the Hugging Face cache or a download. Raises :class:`WeightsMissingError` listing all that
    could not be had, before anything is loaded (``backbone_weights``: see :func:`hub_weights`)."""
    folder = Path(models) if models else None
    found, missing = {}, []
    for weights in hub_weights(cfg, backbone_weights):
        if folder is not None and weights.present(folder):
            # absolute: a checkpoint's config.yaml keeps it, and merge_lora.py or a resume may run elsewhere
            found[weights.key] = weights.local(folder).absolute()
            continue
        if weights.optional:
            continue
        try:
            found[weights.key] = weights.fetch()
        except Exception:  # offline, no cache, network, auth and not-found errors have different types
            missing.append(weights)
    if missing:
        message = missing_message(missing, folder or Path("models"))
        if folder is not None and folder.is_file():
            raise WeightsMissingError(
                f"--models {folder} is a file; pass the folder scripts/download.py wrote"
            )
        if folder is not None and not folder.is_dir():
            message = f"--models {from_here(folder)} does not exist (not a folder here); " + message
        if folder is not None and any(folder.glob("models--*/snapshots")):  # huggingface_hub's own layout
            raise WeightsMissingError(
                f"--models {folder} is a Hugging Face cache (models--owner--name folders), not the folder "
                f"scripts/download.py writes: run with HF_HUB_CACHE={folder} in the environment instead of "
                "--models"
            )
        raise WeightsMissingError(message)
    for key, path in found.items():
        cfg = with_value(cfg, key, str(path))
    return cfg


def config_weights(path: str | Path) -> list[HubWeights]:
    """What a YAML file of any script names (infer, prepare_data or train: the first schema it fits)."""
    from pure.config import (
        ConfigError,
        InferConfig,
        PrepareConfig,
        TrainConfig,
        UnknownKeyError,
        check_config_file,
        load_config,
    )

    check_config_file(path)  # as every script says it (not once per schema tried below)
    wrong_values = []
    for schema, backbone_weights in ((InferConfig, True), (TrainConfig, True), (PrepareConfig, False)):
        try:
            return hub_weights(load_config(schema, path), backbone_weights)
        except UnknownKeyError:  # another script's file
            continue
        except ConfigError as err:  # the keys fit this script's settings, a value does not
            wrong_values.append(err)
    if wrong_values:
        raise wrong_values[0]
    raise ConfigError(f"{path} fits none of the scripts' settings (see any script's --help-config)")


def download(weights: list[HubWeights], models: str | Path) -> list[Path]:
    """Fetch each into the models folder (what ``scripts/download.py`` does); returns the local paths."""
    folder = Path(models)
    return [w.fetch(w.local(folder).parent if w.filename else w.local(folder)) for w in weights]
