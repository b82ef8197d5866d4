"""Argument parsing for the scripts: each ``*_main`` parses its command line, calls the library and
returns the exit code.

- ``infer_main``: ``scripts/infer.py`` (restore a file or a folder)
- ``evaluate_main``, ``benchmark_main``: ``scripts/evaluate.py``, ``scripts/benchmark.py``
- ``prepare_main``: ``scripts/prepare_data.py``
- ``train_main``, ``merge_main``: ``scripts/train.py``, ``scripts/merge_lora.py``
- ``download_main``: ``scripts/download.py`` (weights into one folder for ``--models``)

Heavy libraries (torch, transformers, pyiqa) are imported after the arguments are parsed, so that
``--help``, ``--help-config`` and ``--print-config`` answer at once.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from pure.config import (
    ConfigError,
    InferConfig,
    PrepareConfig,
    TrainConfig,
    is_section,
    load_config,
    schema_help,
    setting_notes,
    to_yaml,
)
from pure.errors import PureError, one_line, require
from pure.files import can_write_in, folders_to_make, lock_folder, remove_empty

if TYPE_CHECKING:
    from pure.metrics import Evaluation
    from pure.plan import Plan

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
    "speculative": "restore.speculative",
    "draft_len": "restore.draft_len",
    "kv_cache": "restore.kv_cache",
    "model": "backbone.source",
    "adapter": "backbone.adapter",
    "quantize": "backbone.quantize",
    "vq": "vq.source",
    "dtype": "dtype",
    "device": "device",
}
"""infer.py's setting flags (argparse ``dest``) and the settings key each sets."""

PREPARE_FLAG_TO_KEY = {"hq_dir": "hq_dirs", "out": "out_dir", "manifest": "caption.manifest"}
"""prepare_data.py's setting flags (argparse ``dest``) and the settings key each sets."""


OTHER_TOOLS_FLAGS = {
    "-s": "--outscale",
    "--scale": "--outscale",
    "-t": "--tile",
    "--tile-size": "--tile",
    "--tile_size": "--tile",
    "--fp32": "--dtype float32",
    "--half": "--dtype float16",
    "--gpu-id": "--device cuda:N",
    "--model-path": "--model",
    "--model_path": "--model",
    "--hr": "--gt",
    "--hq": "--gt",
    "--ref": "--gt",
}
"""Flags of other upscalers (Real-ESRGAN's inference script and its kin) -> this project's flag."""


def positive_int(value: str) -> int:
    """An argparse type: an integer >= 1."""
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def non_negative_int(value: str) -> int:
    """An argparse type: an integer >= 0."""
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {number}")
    return number


def output_format(value: str) -> str:
    """``--ext``: the format's name in any case, with or without its dot; ``jpeg`` is ``jpg``."""
    name = value.strip().lower().removeprefix(".")
    return "jpg" if name == "jpeg" else name


def port(value: str) -> int:
    """An argparse type: a TCP port number, 1-65535."""
    number = int(value)
    if not 1 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 1-65535, got {number}")
    return number


def batch_size(value: str) -> int | str:
    """``--batch-size``: the word auto, or an integer (the schema checks that it is positive)."""
    return value if value == "auto" else int(value)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (the mistake and where to look, not the whole usage block) that lets
    ``key=value`` overrides and flags mix."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}{self._meant(message)} (--help explains every flag)\n")

    def _meant(self, message: str) -> str:
        """For unrecognized flags: this script's flag of the same job in other upscalers (Real-ESRGAN's
        ``-s/--scale``) or of a close spelling (``--tile_overlap``)."""
        if not message.startswith("unrecognized arguments:"):
            return ""
        flags = [s for action in self._actions for s in action.option_strings]
        meant = []
        for word in message.partition(":")[2].split():
            flag = word.partition("=")[0]
            if "--metrics" in flags and _is_metric(word):  # --metrics psnr ssim
                meant.append(f"--metrics A,B (comma-separated) for the metric {word}")
            if not flag.startswith("-"):
                continue
            guess = OTHER_TOOLS_FLAGS.get(flag) or next(
                iter(difflib.get_close_matches(flag.replace("_", "-"), flags, n=1, cutoff=0.8)), None
            )
            if guess and guess.split()[0] in flags:
                meant.append(f"{guess} for {flag}")
        return f"; did you mean {', '.join(meant)}?" if meant else ""

    def parse_args(self, args=None, namespace=None):
        """Flags and trailing ``key=value`` overrides in any order (``... a=1 --flag x b=2``). The namespace's
        ``typed`` holds each flag's values as typed (``{"outscale": ["0"]}``), for errors to quote."""
        self._typed: dict[str, list[str]] = {}
        parsed = self.parse_intermixed_args(args, namespace)
        parsed.typed = self._typed
        return parsed

    def _get_value(self, action: argparse.Action, arg_string: str) -> Any:
        """argparse's conversion of one value, which also records the text typed (``--outscale 0`` is
        named so in an error, not as the float 0.0 it became)."""
        if action.option_strings:
            getattr(self, "_typed", {}).setdefault(action.dest, []).append(arg_string)
        return super()._get_value(action, arg_string)


def infer_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="scripts/infer.py",
        description="Restore low-quality images with PURE: perceive the degradation, describe the content, "
        "restore the image. Settings come from the schema in pure/config.py, then --config, then the flags, "
        "then trailing key=value overrides (e.g. sampling.max_new_tokens=6000).",
    )
    p.add_argument("-i", "--input", help="an image file or a folder of images (required)")
    p.add_argument("-o", "--output", help="folder for the restored images and their sidecars (required)")
    p.add_argument(
        "-r", "--recursive", action="store_true", help="also restore the images in subfolders, mirrored in -o"
    )
    _add_settings_arguments(
        p, InferConfig, "YAML file overriding the defaults (e.g. configs/tiny.yaml, configs/pure_x4.yaml)"
    )
    p.add_argument(
        "--outscale", type=float, help="output scale relative to the input, any float > 0 (default 4)"
    )
    p.add_argument("--tile", type=int, help="model tile size in pixels, a multiple of 32 (default 512)")
    p.add_argument("--tile-overlap", type=int, help="overlap between tiles in output pixels (default 64)")
    p.add_argument(
        "--batch-size",
        type=batch_size,
        help="tiles generated together in one batch, or auto: as many as fit in free GPU memory (default 1)",
    )
    p.add_argument("--suffix", default="", help="appended to output names: NAME_SUFFIX.ext (default: none)")
    p.add_argument(
        "--ext",
        type=output_format,
        choices=["auto", "png", "jpg"],
        default="auto",
        help="output format; auto keeps jpg for jpg inputs and writes png otherwise (always png "
        "when the input has alpha); JPEG at quality 95; the input's metadata (EXIF date taken, camera, "
        "GPS; DPI) is not carried over",
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
        "--speculative",
        choices=["none", "jacobi", "lq", "lq+jacobi"],
        help="draft image tokens and verify them in one forward: same output distribution, other tokens "
        "for a seed (default none)",
    )
    p.add_argument("--draft-len", type=int, help="drafted tokens per forward with --speculative (default 8)")
    p.add_argument(
        "--caption",
        help="opening of the text answer, which the model continues; the answer is the degradation sentence "
        "then the description, e.g. 'Slight blur, mild noise. A cat on a mat.' (its first sentence is "
        "recorded as the degradation)",
    )
    p.add_argument("--model", help="backbone: Hugging Face repo id or local folder (default nonwhy/PURE)")
    p.add_argument(
        "--adapter", help="LoRA adapter folder trained with scripts/train.py, merged into the backbone"
    )
    p.add_argument(
        "--vq",
        help="VQ tokenizer: .pt or .safetensors file, or repo_id:filename (default "
        "FoundationVision/LlamaGen:vq_ds8_c2i.pt)",
    )
    p.add_argument(
        "--dtype",
        choices=["bfloat16", "float16", "float32"],
        help="GPU dtype (default bfloat16; CPU runs float32)",
    )
    p.add_argument(
        "--quantize",
        choices=["none", "int8", "int4"],
        help="weight-only quantisation of the backbone's linear layers: int8 about halves the weights' "
        "memory, int4 (GPU: bfloat16, Ampere or newer) cuts it to about a third (default none)",
    )
    p.add_argument(
        "--kv-cache",
        choices=["model", "int8"],
        help="how the KV cache stores keys and values: model (the model's dtype, exact; default) or int8 "
        "(about half the cache memory; not exact: a seed gives other images)",
    )
    p.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--skip-existing", action="store_true", help="skip inputs whose output already exists")
    mode.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument(
        "--save-entropy-map",
        action="store_true",
        help="also write entropy/NAME.png in -o: each code's sampling entropy (white = 10 nats)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "overrides", nargs="*", metavar="key=value", help="config overrides, e.g. restore.tile=256"
    )
    return p


def _existing_mode(args: argparse.Namespace) -> str:
    return "skip" if args.skip_existing else "overwrite" if args.overwrite else "fail"


def _infer_flags(args: argparse.Namespace) -> list[str]:
    """infer.py's setting flags as ``key=value`` overrides."""
    return [
        f"{FLAG_TO_KEY[k]}={literal(v) if isinstance(v, str) else v}"
        for k, v in vars(args).items()
        if k in FLAG_TO_KEY and v is not None
    ]


def infer_settings(args: argparse.Namespace) -> InferConfig:
    """The settings infer.py's parsed ``args`` make: defaults, --config, flags, --models, overrides."""
    return _settings(InferConfig, args, _infer_flags(args))


KEY_TO_FLAG = {
    key: "--" + dest.replace("_", "-") for dest, key in (FLAG_TO_KEY | PREPARE_FLAG_TO_KEY).items()
} | {"models": "--models"}
"""The flag that sets each settings key (infer.py's flags, ``--models``, prepare_data.py's flags)."""


def _settings(schema: type, args: argparse.Namespace, flags: list[str]) -> Any:
    """``schema``'s defaults, then ``--config``, the ``flags``, ``--models`` and the trailing overrides.
    An error about a value a flag set names the flag as typed (``--outscale 0: must be ...``), one about
    a value of a file or an override its key.

    Raises :class:`ConfigError` when a key is set twice on the command line, by a flag and a trailing
    override (``--hq-dir a hq_dirs=[b]``) or by two overrides (``seed=1 seed=2``): one would silently
    win, so the user is asked to keep one."""
    models = [f"models={literal(args.models)}"] if args.models else []
    _refuse_set_twice(schema, flags + models, args.overrides)
    return load_config(schema, args.config, args.overrides, flags=_typed_flags(args, flags + models))


def _typed_flags(args: argparse.Namespace, flags: list[str]) -> dict[str, str]:
    """Each ``key=value`` item the flags made -> its flag as the user typed it (``--outscale 0``; the
    value as argparse read it where the text was not recorded)."""
    typed = {}
    for item in flags:
        flag = KEY_TO_FLAG[item.partition("=")[0]]
        dest = flag.removeprefix("--").replace("-", "_")
        texts = getattr(args, "typed", {}).get(dest) or [str(getattr(args, dest))]
        typed[item] = " ".join(f"{flag} {shlex.quote(text)}" for text in texts)
    return typed


def _flag_names(args: argparse.Namespace, flags: list[str]) -> dict[str, str]:
    """Each settings key the flags set -> its flag as typed (see :func:`pure.config.named`)."""
    return {item.partition("=")[0]: typed for item, typed in _typed_flags(args, flags).items()}


def _refuse_set_twice(schema: type, flags: list[str], overrides: list[str]) -> None:
    import yaml  # OmegaConf's parser, already loaded with it

    def keys(item: str) -> list[str]:
        """The dotted keys a ``key=value`` item sets. A section override (``restore={tile: 64}``) is merged
        into its section, so it sets only the keys its mapping names; any other value, a text setting's
        ``a: b`` included (taken as typed), sets its key."""
        key, _, value = item.partition("=")
        try:
            tree = yaml.safe_load(value)
        except yaml.YAMLError:  # load_config says what is wrong with it
            tree = None

        def leaves(tree: object, prefix: str) -> list[str]:
            if not isinstance(tree, dict) or not is_section(schema, prefix):
                return [prefix]
            return [leaf for name, inner in tree.items() for leaf in leaves(inner, f"{prefix}.{name}")]

        return leaves(tree, key.strip())

    def common(a: str, b: str) -> str | None:
        """The key that both ``key=value`` items set, or None. A value given to a section, or a mapping to
        a setting, sets the key it names, not those inside it: load_config says what is wrong with it."""
        inside_b = keys(b)
        return next((key for key in keys(a) if key in inside_b), None)

    for index, item in enumerate(overrides):
        if "=" not in item:
            continue
        for flag in flags:
            if (key := common(flag, item)) is not None:
                flag_key = flag.partition("=")[0]
                raise ConfigError(
                    f"{KEY_TO_FLAG.get(flag_key, flag_key)} and the override {item!r} both set {key}; "
                    "keep one of them"
                )
        for earlier in overrides[:index]:
            if "=" in earlier and (key := common(earlier, item)) is not None:
                raise ConfigError(f"the overrides {earlier!r} and {item!r} both set {key}; keep one of them")


def run_inference(args: argparse.Namespace) -> int:
    """Plan, load the models, restore; the exit code: 0 done, 1 any input failed, 2 nothing could start,
    130 interrupted. Everything that can be checked is checked before the models load."""
    cfg, code = _start(InferConfig, args, _infer_flags(args))
    if code is not None:
        return code
    from pure.distributed import Processes
    from pure.pipeline import check_answer_budget

    check_answer_budget(cfg.sampling, cfg.restore, _flag_names(args, _infer_flags(args)))
    output = Path(args.output)
    made = folders_to_make(output)  # removed if left empty
    processes = Processes.start(cfg.device)  # this one, or all that accelerate launch started
    cfg = replace(cfg, device=processes.device(cfg.device))
    from pure.model import pick_device

    for note in setting_notes(cfg, pick_device(cfg.device).type == "cpu") if processes.is_main else []:
        print(f"note: {note}", file=sys.stderr)
    try:
        return _plan_and_restore(args, cfg, processes)
    finally:
        if processes.is_main:
            remove_empty(made)


def _shown(path: Path, folder: Path) -> str:
    """``path`` as a notice names it: from the input folder, so that files of subfolders (``--recursive``)
    are told apart and can be passed by name (``1998/Thumbs.db``, not ``Thumbs.db`` twice)."""
    try:
        return str(path.relative_to(folder))
    except ValueError:  # a path outside the input folder
        return path.name


def _plan_and_restore(args: argparse.Namespace, cfg: InferConfig, processes) -> int:
    from pure.plan import PlanError, plan_outputs

    def make() -> Plan:
        plan = plan_outputs(
            Path(args.input),
            Path(args.output),
            args.suffix,
            args.ext,
            args.recursive,
            _existing_mode(args),
            args.save_entropy_map,
            cfg.restore.outscale,
        )
        # one run per output folder (the main process holds it for all): a second one started while the first
        # runs (the command started twice) planned before the first wrote anything, and would replace the
        # first's outputs without --overwrite, or restore the same images again with --skip-existing
        if (release := lock_folder(plan.output)) is None:
            raise PlanError(
                f"-o {args.output} is in use by another run of scripts/infer.py (started twice?): wait for "
                "it to end (then --skip-existing restores what it left), or pass another -o"
            )
        held.callback(release)
        return plan

    with ExitStack() as held:
        plan = processes.plan(make)
        return _restore(args, cfg, processes, plan)


def _restore(args: argparse.Namespace, cfg: InferConfig, processes, plan: Plan) -> int:
    from pure.download import locate
    from pure.infer import Summary, run_info, work_line
    from pure.pipeline import Restorer

    if processes.is_main:
        _print_notices(plan, Path(args.input))
        _print_changed_settings(plan, cfg)
    summary = Summary.of(plan)
    try:
        if plan.jobs:
            summary = processes.restore(
                plan,
                lambda: Restorer.from_config(locate(cfg, cfg.models)),
                cfg.restore,
                run_info(cfg),
                progress=not args.no_progress,
                # once the models are loaded, what the run is about to do (load errors stay one line)
                loaded=lambda: print(work_line(plan, cfg.restore), file=sys.stderr),
            )
    except KeyboardInterrupt:
        summary.interrupted = True
    if not processes.is_main:
        return summary.exit_code()
    if summary.interrupted:
        print(
            f"interrupted: {summary.restored} of {len(plan.jobs)} images restored; run the same command "
            "with --skip-existing to continue",
            file=sys.stderr,
        )
    print(summary.line())
    return summary.exit_code()


def _print_changed_settings(plan: Plan, cfg: InferConfig) -> None:
    """With --skip-existing: one line when outputs kept were made with other settings than this run's
    (their sidecars say), so that a rerun with a new seed, scale or adapter does not pass for done."""
    from pure.infer import changed_settings

    changed = {job.source: changed_settings(job, cfg) for job in plan.existing}
    kept = [path for path, changes in changed.items() if changes]
    if kept:
        differences = list(dict.fromkeys(change for path in kept for change in changed[path]))
        shown = "; ".join(differences[:4]) + ("; ..." if len(differences) > 4 else "")
        folder = plan.output
        names = ", ".join(_shown(job.image, folder) for job in plan.existing if job.source in kept[:5])
        more = " ..." if len(kept) > 5 else ""
        print(
            one_line(
                f"kept {len(kept)} earlier output(s) made with other settings ({shown}): {names}{more}; "
                "pass --overwrite instead of --skip-existing to restore them with this run's"
            ),
            file=sys.stderr,
        )


def _print_notices(plan: Plan, source: Path) -> None:
    """What the plan of ``source`` (``--input``) left out or changed, one line each on stderr: subfolders
    not searched, earlier outputs and non-images skipped, PNG for transparency, inputs that failed."""
    from pure.images import is_image_name

    hidden = [path for path in plan.not_images if is_image_name(path.with_name(path.name.lstrip(".")))]
    notices = [
        (
            plan.unsearched,
            "did not search {n} subfolder(s) ({names}); pass --recursive to restore their images too",
        ),
        (
            plan.unsearched_outputs,
            "did not search {n} subfolder(s) holding only images pure wrote (an earlier run's outputs, which "
            "--recursive skips too): {names}",
        ),
        (
            plan.previous_outputs,
            "skipped {n} output(s) of an earlier run here (pure's mark or sidecar; to restore them again, "
            "pass them by name): {names}",
        ),
        (
            [path for path in plan.not_images if path not in hidden],
            "skipped {n} file(s) that are not images: {names}",
        ),
        (
            hidden,
            "skipped {n} hidden image file(s) (names starting with a dot, such as the ._ metadata files "
            "macOS leaves; to restore a real image among them, pass it by name): {names}",
        ),
        (plan.png_for_alpha, "writing {n} image(s) with transparency as PNG (JPEG has no alpha): {names}"),
    ]
    folder = source if source.is_dir() else source.parent
    for paths, text in notices:
        if paths:
            names = ", ".join(_shown(p, folder) for p in paths[:5]) + (" ..." if len(paths) > 5 else "")
            print(one_line(text.format(n=len(paths), names=names)), file=sys.stderr)
    if plan.output_not_searched:
        print(
            one_line(
                f"did not search the output folder {plan.output} (inside the input folder): its images are "
                "not restored"
            ),
            file=sys.stderr,
        )
    for line in plan.failed:
        print(one_line(f"failed: {line}"), file=sys.stderr)


def infer_main(argv: list[str] | None = None) -> int:
    """``scripts/infer.py``: restore a file or a folder (see :func:`run_inference` for the exit codes)."""
    parser = infer_parser()
    args = parser.parse_args(argv)
    given = {"-i/--input": args.input, "-o/--output": args.output}
    empty = [flag for flag, value in given.items() if value is not None and not value.strip()]
    if not args.print_config and empty:  # -o "$OUT" with OUT unset, or -o ' '
        parser.error(f"{', '.join(empty)} given but empty (an unset shell variable?): name a path")
    missing = [flag for flag, value in given.items() if not value]
    if not args.print_config and missing:
        parser.error(f"the following arguments are required: {', '.join(missing)}")
    stray = [item for item in args.overrides if "=" not in item and Path(item).exists()]
    folder = Path(args.input or ".").parent
    if stray and args.input and (Path(args.input).is_dir() or any(Path(p).parent != folder for p in stray)):
        parser.error(  # not a shell pattern's files (one folder): a path typed without its flag
            f"{stray[0]} is neither a flag nor a key=value override: -i/--input takes one image or one "
            f"folder ({args.input}); restore {stray[0]} in a run of its own"
        )
    if stray and args.input:  # `-i photos/*.png`: the shell gave every file, argparse kept the first
        parser.error(
            f"-i/--input takes one image or one folder, but {len(stray) + 1} paths were given (a shell "
            f"pattern such as *.png expands to every file): pass the folder, -i {folder}"
        )
    return _run(lambda: run_inference(args))


# ---------------------------------------------------------------------------- shared settings flags


class _HelpConfig(argparse.Action):
    """``--help-config``: every key of the script's schema with its type, default and docstring, then exit."""

    def __init__(self, option_strings: list[str], dest: str, schema: type, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)
        self.schema = schema

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(
            f"Settings of {parser.prog} ({self.schema.__name__} in pure/config.py): set them in a --config "
            "YAML file or as trailing key=value overrides.\n"
        )
        print(schema_help(self.schema))
        parser.exit()


def _add_settings_arguments(p: argparse.ArgumentParser, schema: type, config_help: str) -> None:
    """``--config``, ``--models``, ``--threads``, ``--print-config`` and ``--help-config``."""
    p.add_argument(
        "--config",
        action="append",
        metavar="FILE",
        help=f"{config_help}; repeat it to layer files in order (a later file wins on a key both set)",
    )
    p.add_argument(
        "--models",
        metavar="DIR",
        help="folder written by scripts/download.py; hub weights are read from it (the models key)",
    )
    _add_threads(p)
    p.add_argument("--print-config", action="store_true", help="print the resolved settings as YAML and exit")
    p.add_argument(
        "--help-config",
        action=_HelpConfig,
        schema=schema,
        help="list every settings key with its default and meaning, and exit",
    )


def _start(
    schema: type, args: argparse.Namespace, flags: list[str], output_key: str = ""
) -> tuple[Any, int | None]:
    """Everything before the work: the settings (the schema's defaults, then ``--config``, the flags,
    ``--models`` and the trailing overrides), ``--print-config``, the output folder (``output_key``:
    one line when it, or a folder above it, is a file) and ``--threads``. Returns the settings and,
    when the script should stop here, its exit code."""
    cfg = _settings(schema, args, flags)
    if not args.print_config and output_key:
        path = str(getattr(cfg, output_key))
        _check_output_folder(path, _flag_names(args, flags).get(output_key) or f"{output_key}={path}")
    if args.print_config:
        print(to_yaml(cfg), end="")
        return cfg, 0
    _use_threads(args.threads)
    return cfg, None


def _add_threads(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--threads",
        type=positive_int,
        help="CPU threads torch may use (default: torch's, one per core); 1 helps on a busy machine",
    )


def _use_threads(threads: int | None) -> None:
    """``--threads``: torch's CPU threads for this process (None: torch's default)."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def literal(value: str | list[str]) -> str:
    """A ``key=value`` override's value that reads back as ``value`` exactly: JSON, which YAML parses, with
    non-ASCII kept as is (JSON's ``\\ud83d`` surrogate pairs are not valid YAML) and OmegaConf's
    interpolation ``${`` escaped, so captions and paths are never evaluated."""

    def escaped(v):  # backslashes right before ${ are escapes too: double them, then escape the ${
        return (
            re.sub(r"(\\*)\$\{", lambda m: m.group(1) * 2 + "\\${", v)
            if isinstance(v, str)
            else [escaped(x) for x in v]
        )

    return json.dumps(escaped(value), ensure_ascii=False)


def _check_output_folder(path: str, shown: str) -> None:
    """Refuse an output folder ``path`` (named ``shown`` in the error: ``out_dir=x``, ``--out x``) that
    is, or lies below, a file."""
    for folder in (Path(path), *Path(path).parents):
        if folder.exists():
            if not folder.is_dir():
                raise ConfigError(f"{shown}: {folder} is a file, not a folder; choose a folder")
            return


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, ``docker stop``, a scheduler's preemption), raised where Ctrl-C would be so that
    the same clean stop runs: the summary, no half-written file, the line saying how to continue."""


def _run(work: Callable[[], int]) -> int:
    """Run one command: the one place a user's mistake (:class:`~pure.errors.PureError`) is caught; it is
    printed as one line and the exit code is 2. Ctrl-C before the work's own handling (while settings are
    read or libraries and models load) prints ``interrupted`` and exits 130, as the work does. SIGTERM is
    handled as Ctrl-C, and the exit code is then 143 (128 + 15, what an unhandled SIGTERM gives)."""
    received: list[int] = []

    def terminate(signum: int, frame: object) -> NoReturn:
        received.append(signum)
        raise Terminated()

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, terminate) if main_thread else None
    stdout_errors = _tolerant_stdout()
    try:
        code = work()
    except PureError as err:
        code = _error(err)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
        if stdout_errors is not None:
            sys.stdout.reconfigure(errors=stdout_errors)
    return 143 if code == 130 and received else code


def _tolerant_stdout() -> str | None:
    """Let ``sys.stdout`` write what its encoding cannot hold as escapes (``\\udcff``), as Python's stderr
    always does, instead of raising ``UnicodeEncodeError``: a path that is not UTF-8 (possible on Linux) in
    the summary line, or an emoji on a terminal that is not UTF-8, would otherwise end a finished run
    with a traceback and exit 1. Returns the error handler it replaced (None: nothing changed)."""
    errors = getattr(sys.stdout, "errors", None)
    if errors != "strict" or not hasattr(sys.stdout, "reconfigure"):
        return None
    sys.stdout.reconfigure(errors="backslashreplace")
    return errors


def _error(err: BaseException) -> int:
    print(f"error: {err}", file=sys.stderr)
    return getattr(err, "exit_code", 2)  # 2: could not start; a DiskFullError stopped started work: 1


# ---------------------------------------------------------------------------- evaluation


def _add_common_arguments(parser: argparse.ArgumentParser) -> None:
    from pure.metrics import DEFAULT_METRICS, METRICS

    parser.add_argument(
        "--metrics",
        action="append",
        metavar="A,B,...",
        help=f"metrics to run, comma-separated (repeatable), or 'all'; choices: {', '.join(METRICS)} "
        f"(default: {','.join(DEFAULT_METRICS)}; without ground truth only the no-reference ones)",
    )
    parser.add_argument(
        "--sr-name",
        default="{stem}",
        help="SR file name (without suffix) for GT '<stem>.*', e.g. '{stem}_out' (default: {stem})",
    )
    parser.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="FILE",
        help="JSON/CSV file of published results to add as table rows (repeatable), "
        "e.g. data/published/pure_x4.json",
    )
    parser.add_argument(
        "--device",
        default="auto",
        help="torch device for the metrics: auto (cuda if available, else cpu), cpu, cuda, cuda:N "
        "(default: auto)",
    )
    parser.add_argument("--batch-size", type=positive_int, default=8, help="images per batch (default: 8)")
    parser.add_argument(
        "--crop-border",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="pixels cut off each side of SR and GT before every per-image metric, as basicsr's "
        "crop_border (classic SR tables use the scale, e.g. 4; FID reads whole images; default: 0)",
    )
    parser.add_argument(
        "--download",
        action="store_true",
        help="let pyiqa download missing weight files (needs internet); without it, metrics "
        "whose files are missing are reported unavailable with the file and folder",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    _add_threads(parser)


def _is_metric(word: str) -> bool:
    from pure.metrics import METRICS

    return word.lower() in METRICS


def _metric_list(values: Sequence[str] | None) -> list[str] | None:
    from pure.metrics import METRICS

    if not values:
        return None
    names = [n.strip() for value in values for n in value.split(",") if n.strip()]
    if not names:
        from pure.pairing import EvaluationError

        raise EvaluationError(f"--metrics names no metric; pass some of {', '.join(METRICS)}, or all")
    return list(METRICS) if [n.lower() for n in names] == ["all"] else names


def _evaluate_kwargs(args: argparse.Namespace) -> dict:
    from pure.model import pick_device

    if not args.download:
        # Every file a metric needs is checked on disk first, so the hub is never needed; offline
        # mode stops huggingface_hub from checking for newer revisions (about 50 s without internet).
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return {
        "metrics": _metric_list(args.metrics),
        "sr_name": args.sr_name,
        "device": pick_device(args.device),
        "batch_size": args.batch_size,
        "crop_border": args.crop_border,
        "download": args.download,
        "progress": not args.no_progress,
    }


def _finish(
    evaluation: Evaluation, written: Sequence[Path], named: bool = False, replacing: bool = False
) -> int:
    """The exit code: 1 when no metric ran (then nothing was written, earlier results stay), or when a
    metric asked for by name (``named``: --metrics was given) could not run; 0 otherwise (the default
    list skips what is unavailable). ``replacing``: the files held earlier results (the line says so)."""
    if not evaluation.mean:
        print("error: no metric could run (see above); nothing written", file=sys.stderr)
        return 1
    replaced = " (replacing earlier results there)" if replacing else ""
    print(f"wrote {' and '.join(map(str, written))}{replaced}", file=sys.stderr)
    if named and evaluation.unavailable:
        names = ", ".join(evaluation.unavailable)
        print(f"error: asked for but not run: {names} (see above)", file=sys.stderr)
        return 1
    return 0


def evaluate_main(argv: Sequence[str] | None = None) -> int:
    """``scripts/evaluate.py``: score an SR folder, write JSON and CSV, print a Markdown table.

    Exit codes: 0 scored, 1 no metric could run or the results could not be written, 2 a wrong folder,
    file or argument."""
    parser = _Parser(
        prog="scripts/evaluate.py",
        description="Score super-resolved images with pyiqa (PSNR/SSIM on Y of YCbCr, no border crop; "
        "LPIPS, DISTS, FID; NIQE, MUSIQ, MANIQA, CLIPIQA, TOPIQ), pairing files by name.",
    )
    parser.add_argument("--sr", help="folder of super-resolved images (required unless --check-weights)")
    parser.add_argument(
        "--gt",
        help="folder of ground-truth images with the same names; without it only no-reference metrics run",
    )
    parser.add_argument(
        "--name",
        help="row name in the table and JSON, and the folder runs/eval/NAME (default: the SR folder's name)",
    )
    parser.add_argument(
        "-r",
        "--recursive",
        action="store_true",
        help="also the images in subfolders, paired by their path (sr/x/a.png with gt/x/a.png; infer.py's "
        "entropy/ folder is left out); without it, subfolders with images are named in a note",
    )
    parser.add_argument("--json", help="where to write the means (default: runs/eval/<name>/metrics.json)")
    parser.add_argument(
        "--csv", help="where to write per-image scores (default: runs/eval/<name>/per_image.csv)"
    )
    parser.add_argument(
        "--check-weights",
        action="store_true",
        help="list every metric's weight files and where to put them, then exit",
    )
    _add_common_arguments(parser)
    args = parser.parse_args(argv)
    return _run(lambda: _evaluate(parser, args))


def _evaluate(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from pure.images import IMAGE_SUFFIXES
    from pure.metrics import evaluate_folders, folder_name, weights_report
    from pure.pairing import EvaluationError
    from pure.reports import load_rows, report, write_csv, write_json

    if args.check_weights:
        print(weights_report())
        return 0
    if not args.sr:
        parser.error("--sr DIR is required")
    _use_threads(args.threads)
    folder_needed = not (args.json and args.csv)  # --name is then also the folder runs/eval/NAME
    if args.name and folder_needed and (Path(args.name).name != args.name or args.name in (".", "..")):
        raise EvaluationError(
            f"--name {args.name!r} is a row name and the folder runs/eval/NAME: give a plain name, without / "
            "(write the files elsewhere with --json FILE --csv FILE)"
        )
    out = Path("runs") / "eval" / (args.name or folder_name(args.sr))  # an empty --name: the folder's
    json_path, csv_path = Path(args.json or out / "metrics.json"), Path(args.csv or out / "per_image.csv")
    if json_path.resolve() == csv_path.resolve():
        raise EvaluationError(f"--json and --csv are the same file ({json_path}); give each its own")
    for flag, path in (("--json", json_path), ("--csv", csv_path)):  # before scoring (it can take minutes)
        if path.is_dir():
            raise EvaluationError(f"{path} is a folder; pass --json FILE --csv FILE")
        if path.suffix.lower() in IMAGE_SUFFIXES:  # e.g. an image being scored: never replaced by a table
            raise EvaluationError(f"{flag} {path} names an image file; pass a .{flag[2:]} file name")
        if (reason := can_write_in(path.parent)) is not None:  # never one file written and the other not
            raise EvaluationError(f"{flag} {path} cannot be written ({reason}); pass another {flag}")
    compare = [row for path in args.compare for row in load_rows(path)]
    evaluation = evaluate_folders(
        args.sr, args.gt, name=args.name, recursive=args.recursive, **_evaluate_kwargs(args)
    )
    print(report(evaluation, compare))
    if not evaluation.mean:
        return _finish(evaluation, [])
    replacing = json_path.exists() or csv_path.exists()
    try:
        write_json(evaluation, json_path, {"sr": args.sr, "gt": args.gt})
        write_csv(evaluation, csv_path)
    except OSError as error:
        print(
            f"error: cannot write results ({error}); pass --json FILE --csv FILE elsewhere", file=sys.stderr
        )
        return 1
    return _finish(evaluation, [json_path, csv_path], named=bool(args.metrics), replacing=replacing)


def benchmark_main(argv: Sequence[str] | None = None) -> int:
    """``scripts/benchmark.py``: inference on ``<root>/<name>/lr``, then evaluation against ``hr``."""
    parser = _Parser(
        prog="scripts/benchmark.py",
        description="Restore data/benchmarks/<name>/lr into RUN/sr as scripts/infer.py does (in this "
        "process, same input rules), then score RUN/sr against data/benchmarks/<name>/hr into "
        "RUN/metrics.json and RUN/per_image.csv. Arguments not listed here (e.g. --config FILE, "
        "key=value) are infer.py's; --batch-size and --device here are the metrics' (for inference write "
        "restore.batch_size=N and device=NAME).",
    )
    parser.add_argument("name", help="test set name: a folder under --root with lr/ and hr/")
    parser.add_argument(
        "--root", default="data/benchmarks", help="folder of test sets (default: data/benchmarks)"
    )
    parser.add_argument("--run", help="run folder (default: runs/<name>/<date-time>)")
    parser.add_argument("--skip-inference", action="store_true", help="score an existing RUN/sr again")
    parser.add_argument(
        "--name",
        dest="label",
        help="row name in the table and metrics.json (default: the test set's name), e.g. --name pure-lora "
        "to tell runs of one set apart in a --compare table",
    )
    _add_common_arguments(parser)
    own, infer_args = _split_infer_flags(list(sys.argv[1:] if argv is None else argv), parser)
    args, unknown = parser.parse_known_args(own)
    stray = [  # neither a flag, a flag's value nor a key=value override (--metrics psnr ssim)
        word
        for i, word in enumerate(unknown)
        if "=" not in word and not word.startswith("-") and not (i and unknown[i - 1].startswith("-"))
    ]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    return _run(lambda: _benchmark(args, infer_args + unknown))


def _split_infer_flags(argv: list[str], parser: argparse.ArgumentParser) -> tuple[list[str], list[str]]:
    """``argv`` -> (benchmark.py's own arguments, infer.py's flags with their values and key=value overrides),
    so that neither a value of an infer.py flag (``--config FILE``, ``--threads 1``) nor an override is ever
    taken for the test set's name."""
    ours = set(parser._option_string_actions)
    takes_value = {
        flag: action.nargs != 0
        for flag, action in infer_parser()._option_string_actions.items()
        if flag not in ours
    }
    own_value = {flag for flag, action in parser._option_string_actions.items() if action.nargs != 0}
    own, infer = [], []
    words = iter(argv)
    for word in words:
        flag = word.partition("=")[0]
        if flag in takes_value:
            infer.append(word)
            if takes_value[flag] and "=" not in word:
                infer.append(next(words, ""))
        elif "=" in word and not word.startswith("-") and not (own and own[-1] in own_value):
            infer.append(word)  # a key=value override, wherever it stands (before or after the name)
        else:
            own.append(word)
    return own, [w for w in infer if w != ""]


def _benchmark(args: argparse.Namespace, infer_args: list[str]) -> int:
    from pure.benchmark import benchmark_paths, run_benchmark
    from pure.pairing import EvaluationError
    from pure.reports import load_rows, report

    run = benchmark_paths(args.name, args.root, args.run)["run"]  # one time-stamped folder for the hint
    if args.skip_inference and not args.run:  # a new time-stamped folder would hold nothing to score
        earlier = sorted(p for p in (Path("runs") / args.name).glob("*/sr") if p.is_dir())
        example = earlier[-1].parent if earlier else Path("runs") / args.name / "<date-time>"
        raise EvaluationError(
            f"--skip-inference scores an earlier run's outputs: name it with --run, e.g. --run {example}"
        )
    _use_threads(args.threads)  # scoring's threads, and inference's (in this process)
    quiet = ["--no-progress"] if args.no_progress else []  # one flag hides both stages' bars
    parser = infer_parser()
    parser.prog = "scripts/benchmark.py"  # a typo in infer.py's flags is this command's error
    # Lossless outputs unless --ext says otherwise: infer.py's auto would score JPEG LR sets' JPEG artefacts.
    # Parsed first: an unknown flag (evaluate.py's --name) is no inference setting for the rule below.
    settings = parser.parse_args(["-i", "LR", "-o", "SR", "--ext", "png", *quiet, *infer_args])
    if args.skip_inference and infer_args:
        raise EvaluationError(
            f"{' '.join(infer_args)}: inference settings do nothing with --skip-inference (it scores RUN/sr "
            "again); leave them out, or drop --skip-inference"
        )
    settings.threads = args.threads  # one flag for both stages
    cfg = None if args.skip_inference else infer_settings(settings)
    outscale = None if cfg is None else cfg.restore.outscale

    def infer(lr: Path, sr: Path) -> int:
        return run_inference(argparse.Namespace(**{**vars(settings), "input": str(lr), "output": str(sr)}))

    scoring = _evaluate_kwargs(args)
    lr_name = args.sr_name  # the outputs keep their LR names: --sr-name pairs those too
    if settings.suffix:  # ... plus the suffix infer.py gives them
        tail = "_" + settings.suffix.replace("{", "{{").replace("}", "}}")
        if args.sr_name == "{stem}":
            scoring["sr_name"] = "{stem}" + tail
        elif not args.sr_name.endswith(tail) and not args.skip_inference:  # would pair none, after inference
            raise EvaluationError(
                f"--sr-name {args.sr_name!r} must end with {tail!r}: the outputs carry --suffix "
                f"{settings.suffix} (e.g. --sr-name '{args.sr_name}{tail}')"
            )
        lr_name = scoring["sr_name"].removesuffix(tail)

    replacing = (run / "metrics.json").exists() or (run / "per_image.csv").exists()  # said, never silent
    try:
        compare = [row for path in args.compare for row in load_rows(path)]
        evaluation, paths = run_benchmark(
            args.name,
            args.root,
            run,
            None if args.skip_inference else infer,
            outscale=outscale,
            lr_name=lr_name,
            label=args.label,
            **scoring,
        )
    except KeyboardInterrupt:
        continued = "" if args.run else f" --run {run}"
        hint = "" if args.skip_inference else f": to continue this run, add{continued} --skip-existing"
        print(f"interrupted{hint}", file=sys.stderr)
        return 130
    except PureError:  # a mistake (missing weights are a FileNotFoundError too): its own line, exit 2
        raise
    except OSError as error:  # writing RUN/metrics.json or RUN/per_image.csv
        print(f"error: cannot write results ({error}); pass another --run", file=sys.stderr)
        return 1
    print(report(evaluation, compare))
    return _finish(evaluation, [paths["json"], paths["csv"]], named=bool(args.metrics), replacing=replacing)


# ---------------------------------------------------------------------------- training data


def prepare_main(argv: list[str] | None = None) -> int:
    """``scripts/prepare_data.py``: 0 when done, 1 when images were skipped, 2 when nothing could start,
    130 when interrupted."""
    p = _Parser(
        prog="scripts/prepare_data.py",
        description="Turn HQ image folders into PURE training shards: Real-ESRGAN degradation, degradation "
        "labels, descriptions, VQ tokens. Rerunning continues where the last run stopped; run it under "
        "`accelerate launch` to use several processes or GPUs.",
    )
    _add_settings_arguments(
        p, PrepareConfig, "YAML file overriding the defaults (e.g. configs/prepare_tiny.yaml)"
    )
    p.add_argument("--hq-dir", action="append", help="HQ image folder (repeatable; replaces hq_dirs)")
    p.add_argument("--out", help="output folder (out_dir)")
    p.add_argument("--manifest", help="description manifest, .jsonl or .csv (caption.manifest)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. seed=1")
    args = p.parse_args(argv)
    flags = [
        f"{key}={literal(getattr(args, dest))}"
        for dest, key in PREPARE_FLAG_TO_KEY.items()
        if getattr(args, dest) is not None  # --out '' is an empty out_dir, refused as one
    ]
    return _run(lambda: _prepare(args, flags))


def _prepare(args: argparse.Namespace, flags: list[str]) -> int:
    cfg, code = _start(PrepareConfig, args, flags, output_key="out_dir")
    if code is not None:
        return code
    from pure.data.prepare import check_manifest, prepare, read_journals
    from pure.download import locate

    check_manifest(cfg.caption, "--manifest" if args.manifest is not None else "")  # named as typed
    try:
        summary = prepare(locate(cfg, cfg.models, backbone_weights=False), progress=not args.no_progress)
    except KeyboardInterrupt:
        done = len(read_journals(Path(cfg.out_dir))) if Path(cfg.out_dir).is_dir() else 0
        print(
            f"\ninterrupted: {done} images are in complete shards in {cfg.out_dir}; run the same command "
            "again to continue (finished images are skipped)",
            file=sys.stderr,
        )
        return 130
    from accelerate import PartialState

    if PartialState().is_main_process:
        done = "nothing to do, " if not summary.prepared and not summary.skipped else ""
        print(
            f"{done}{summary.prepared} images prepared, {summary.up_to_date} already up to date, "
            f"{len(summary.skipped)} skipped{' (each named above)' if summary.skipped else ''}; "
            + (
                f"{summary.examples} examples in {cfg.out_dir}/index.jsonl"
                if summary.examples
                else "no examples written"
            )
        )
    return 1 if summary.skipped else 0


# ---------------------------------------------------------------------------- training


def train_main(argv: list[str] | None = None) -> int:
    """``scripts/train.py``: 0 when training finished, 2 when it could not start, 1 when it stopped part-way
    (a full disk, a loss that became nan or inf), 130 when interrupted (143: SIGTERM)."""
    p = _Parser(
        prog="scripts/train.py",
        description="Fine-tune PURE (LoRA or full). Settings: the schema in pure/config.py (TrainConfig, "
        "listed by --help-config), then --config, then key=value overrides. Multi-GPU and multi-node: "
        "run it under `accelerate launch` with a config from configs/accelerate/.",
    )
    _add_settings_arguments(
        p, TrainConfig, "YAML file, e.g. configs/train_tiny_lora.yaml or configs/train_lora_x4.yaml"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar (log.jsonl is written anyway)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. optim.lr=1e-4 resume=latest")
    args = p.parse_args(argv)
    return _run(lambda: _train(args))


def _train(args: argparse.Namespace) -> int:
    cfg, code = _start(TrainConfig, args, [], output_key="output_dir")
    if code is not None:
        return code
    from pure.checkpoint import checkpoints
    from pure.download import locate
    from pure.train import train

    try:
        train(locate(cfg, cfg.models), progress=not args.no_progress)
    except KeyboardInterrupt:
        if os.environ.get("RANK", "0") == "0":
            saved = checkpoints(cfg.output_dir)
            done = (
                f"the last checkpoint is {saved[-1]}; continue with the same command and resume=latest"
                if saved
                else f"no checkpoint was written yet (save_every={cfg.save_every})"
            )
            print(f"\ninterrupted: {done}", file=sys.stderr)
        return 130
    return 0


def merge_main(argv: list[str] | None = None) -> int:
    """``scripts/merge_lora.py``: a LoRA checkpoint -> a standalone model folder."""
    p = _Parser(
        prog="scripts/merge_lora.py",
        description="Merge a LoRA checkpoint's adapters into its base model and save a "
        "standalone model folder for scripts/infer.py --model.",
    )
    p.add_argument("checkpoint", help="checkpoint folder, e.g. outputs/run/checkpoints/step-001000")
    p.add_argument("output", help="folder for the merged model")
    p.add_argument(
        "--dtype",
        choices=["bfloat16", "float16", "float32"],
        default="bfloat16",
        help="dtype of the saved weights (default bfloat16)",
    )
    p.add_argument(
        "--base",
        default="",
        metavar="DIR",
        help="the base model the adapter was trained on (default: backbone.source in the checkpoint's "
        "config.yaml); pass its folder here when the checkpoint was copied from another machine",
    )
    _add_threads(p)
    args = p.parse_args(argv)
    return _run(lambda: _merge(args))


def _merge(args: argparse.Namespace) -> int:
    from pure.checkpoint import merge_adapter

    _use_threads(args.threads)
    print(f"merged model: {merge_adapter(args.checkpoint, args.output, args.dtype, args.base)}")
    return 0


def download_main(argv: list[str] | None = None) -> int:
    """``scripts/download.py``: fetch the weights runs need into one folder; 0 done, 1 a download failed."""
    p = _Parser(
        prog="scripts/download.py",
        usage="scripts/download.py [-h] [--config FILE] [--list] folder [SOURCE ...]",  # folder is required
        description="On a machine with internet access, download weights into one folder; copy it to "
        "machines without access and pass it to any script as --models DIR (or models=DIR). Without "
        "SOURCE or --config: what scripts/infer.py needs by default (nonwhy/PURE and the VQ tokenizer).",
    )
    p.add_argument("folder", nargs="?", help="the models folder, e.g. models (required)")
    p.add_argument(
        "sources",
        nargs="*",
        metavar="SOURCE",
        help="a Hugging Face repo id (a whole model folder) or repo_id:filename (one file)",
    )
    p.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="FILE",
        help="a YAML file of any script (e.g. configs/train_full_x4.yaml): fetch the weights it names",
    )
    p.add_argument("--list", action="store_true", help="print the equivalent hf download commands and exit")
    args = p.parse_args(argv)
    if args.folder is None:  # argparse would also call the optional SOURCE required
        p.error("the following argument is required: folder (where the weights go, e.g. models)")
    return _run(lambda: _download(args))


def _download(args: argparse.Namespace) -> int:
    from pure.download import HubWeights, config_weights, download, hub_reachable, hub_weights, parse_source

    wanted = [parse_source(source) for source in args.sources]
    wanted += [w for path in args.config for w in config_weights(path)]
    if not args.sources and not args.config:  # nothing named: the released model; a config that names
        wanted = hub_weights(load_config(InferConfig))  # no hub weights (tiny sources) fetches nothing
    if not wanted:
        print("nothing to download: the config names no hub weights (its sources are local or tiny)")
        return 0
    chosen: dict[tuple[str, str], HubWeights] = {}
    for weights in sorted(wanted, key=lambda w: -len(w.patterns)):  # a whole model covers its tokenizer
        chosen.setdefault((weights.repo, weights.filename), weights)
    unique = list(chosen.values())
    folder = Path(args.folder)
    if folder.exists() and not folder.is_dir():
        raise PureError(f"{folder} is a file; pass the folder to download into, e.g. models")
    if args.list:
        print("\n".join(w.command(folder) for w in unique))
        return 0
    if (reason := can_write_in(folder)) is not None:  # before any download: each would fail at its end
        raise PureError(f"cannot write in {folder} ({reason}); pass a folder you can write to")
    if not hub_reachable():
        print(
            "error: the Hugging Face hub cannot be reached from here (no network, or HF_HUB_OFFLINE=1); "
            "run this on a machine with internet access, or print the commands with --list:\n"
            + "\n".join(f"  {w.source}" for w in unique),
            file=sys.stderr,
        )
        return 1
    failed = 0
    for weights in unique:  # each on its own: one failure does not stop the others
        try:
            print(f"{weights.source} -> {download([weights], folder)[0]}")
        except Exception as err:  # network, auth and not-found errors have different types
            why = " ".join(str(err).split())  # huggingface_hub's messages span lines: one line each here
            print(
                f"error: could not download {weights.source} ({type(err).__name__}: {why})",
                file=sys.stderr,
            )
            failed += 1
    if failed:
        return 1
    print(f"copy {args.folder}/ to where the runs are and pass --models {args.folder}")
    return 0


# ---------------------------------------------------------------------------- web demo


def app_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="scripts/app.py",
        description="Serve a web page (Gradio) that restores one uploaded photo at a time with the models "
        "and settings of scripts/infer.py: before and after, the perceived degradation, the description, "
        "the entropy map, downloads. Needs the demo extra: pip install -e '.[demo]'. Settings: the schema "
        "in pure/config.py, then --config, then trailing key=value overrides; the page sets scale, tile, "
        "seed, guidance, temperature, colour fix, caption, quantisation and KV cache per job.",
    )
    _add_settings_arguments(
        p, InferConfig, "YAML file overriding the defaults (e.g. configs/tiny.yaml: tiny random models, CPU)"
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on; 0.0.0.0 serves every network interface (default 127.0.0.1: this machine)",
    )
    p.add_argument(
        "--port", type=port, help="port to listen on, 1-65535 (default: 7860 or the next free one)"
    )
    p.add_argument(
        "--share", action="store_true", help="also open a temporary public gradio.live link (needs internet)"
    )
    p.add_argument(
        "--max-side",
        type=positive_int,
        default=1024,
        help="largest input the page accepts, in pixels on the longer side (default 1024)",
    )
    p.add_argument(
        "--output",
        metavar="DIR",
        help="keep every job's PNG, sidecar and entropy map in DIR/<name>-<id>/ (default: a temporary "
        "folder removed when the server stops)",
    )
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. restore.tile=64")
    return p


def app_main(argv: list[str] | None = None) -> int:
    """``scripts/app.py``: load the models, serve the page until Ctrl-C; 2 when it cannot start."""
    args = app_parser().parse_args(argv)
    return _run(lambda: _serve_app(args))


def _serve_app(args: argparse.Namespace) -> int:
    cfg, code = _start(InferConfig, args, [])
    if code is not None:
        return code
    if args.output:
        _check_output_folder(args.output, f"--output {shlex.quote(args.output)}")
    from pure.demo import Models, check_port, scratch_folder, serve
    from pure.download import locate
    from pure.pipeline import Restorer, check_answer_budget

    with scratch_folder() as scratch:  # first: Gradio reads where its own copies go when it is imported
        require("gradio", "the web demo needs Gradio", 'pip install -e ".[demo]"')
        check_answer_budget(cfg.sampling, cfg.restore)  # before the models load
        check_port(args.host, args.port)
        located = locate(cfg, cfg.models)
        models = Models(located, Restorer.from_config(located), Restorer.from_config)
        output = Path(args.output) if args.output else None
        serve(models, scratch, args.host, args.port, args.share, max_side=args.max_side, output=output)
    return 0
