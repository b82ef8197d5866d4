"""Several processes (GPUs, machines) through accelerate: who restores what, and one summary.

``accelerate launch --num_processes N scripts/infer.py -i IN -o OUT`` (or ``torchrun``) starts N copies
of the script; this module makes them one run:

- **one plan**: the main process plans the outputs (:func:`pure.plan.plan_outputs`) and sends the plan
  to the others, so every process works from the same list;
- **the work is dealt** (:func:`deal`): images go whole to one process each, the largest first to the
  least-loaded process; the images left over after the last full round of N (all of them when there
  are fewer images than processes) are *shared*: their tile groups (``restore.batch_size`` consecutive
  tiles) are dealt across every process, and the answers are gathered by one owner that decodes, blends
  and writes;
- **every output is written once**, by the process that restored the image (a shared image's owner);
- **the same outputs whatever N**: a tile's seed is the run's seed plus its index in its image, and a
  shared image's tile groups are the batches a single process forms, so no token depends on which
  process drew it (with ``restore.batch_size: auto`` each process batches its tiles by its own memory,
  as one process would by its own). On the CPU the pixels also depend on torch's thread count: a few
  differ by 1/255 between 1 and 2 threads per process;
- **one summary**: the counts of every process are gathered; the main process prints, and every
  process returns the exit code of the whole run, so the launcher fails when any image failed.

A run that is not launched (one process) never imports accelerate and does exactly what it did before.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from tqdm import tqdm

from pure.errors import PureError, one_line
from pure.images import ImageReadError, read_header, read_image
from pure.infer import ImageRestorer, Summary, restore_plan
from pure.launch import check_processes, launched_processes
from pure.plan import Job, Plan
from pure.tiling import tile_count

if TYPE_CHECKING:
    import torch
    from accelerate import PartialState
    from PIL import Image

    from pure.config import RestoreConfig


class TileRestorer(ImageRestorer, Protocol):
    """What restoring an image shared by several processes needs of a restorer (a
    :class:`pure.pipeline.Restorer` is one): cut it into tiles, answer some, restore from the answers."""

    settings: RestoreConfig

    def prepare_tiles(self, image: Image.Image): ...

    def answer_tiles(self, tiles, indices: list[int]) -> dict[int, tuple[torch.Tensor, ...]]: ...

    def replaying(self, answers: dict[int, tuple[torch.Tensor, ...]]) -> ImageRestorer: ...


# ------------------------------------------------------------------------------------ who does what


def tile_groups(size: tuple[int, int], settings: RestoreConfig) -> int:
    """How many tile groups (:func:`group_size` consecutive tiles) an image of ``size`` (width, height)
    has: its batched generations in a one-process run with an integer ``restore.batch_size``."""
    tiles = tile_count(*size, settings.outscale, settings.tile, settings.tile_overlap)
    return -(-tiles // group_size(settings))


def group_size(settings: RestoreConfig) -> int:
    """Tiles per group: ``restore.batch_size``, or 1 for ``auto`` (each process then batches its tiles of
    a shared image by its own device's memory)."""
    return settings.batch_size if isinstance(settings.batch_size, int) else 1


@dataclass
class Deal:
    """Which process restores which image (indices into a plan's jobs)."""

    whole: list[list[int]]
    """Per process: the images it restores alone, in plan order."""
    shared: list[int]
    """Images whose tile groups are dealt across every process, in plan order."""
    units: list[list[tuple[int, int]]] = field(default_factory=list)
    """Per process: its ``(shared image, tile group)`` pairs (``k`` indexes ``shared``)."""

    def owner(self, shared: int) -> int:
        """The process that gathers, decodes, blends and writes the ``shared``-th shared image."""
        return shared % len(self.whole)


def deal(groups: list[int], processes: int) -> Deal:
    """Deal images of ``groups[j]`` tile groups each (:func:`tile_groups`) to ``processes`` processes.

    The ``len(groups) % processes`` images with the most groups (ties: the earlier image) are shared,
    unless they have a single group; their groups are dealt round-robin, image after image. Every other
    image goes whole, the largest first, to the process with the fewest groups so far (ties: the lowest
    rank). The same inputs give the same deal on every process.
    """
    by_size = sorted(range(len(groups)), key=lambda j: (-groups[j], j))
    shared = sorted(j for j in by_size[: len(groups) % processes] if groups[j] > 1)
    units: list[list[tuple[int, int]]] = [[] for _ in range(processes)]
    pairs = [(k, g) for k, j in enumerate(shared) for g in range(groups[j])]
    for u, pair in enumerate(pairs):
        units[u % processes].append(pair)
    loads = [len(u) for u in units]
    whole: list[list[int]] = [[] for _ in range(processes)]
    for j in by_size:
        if j not in shared:
            rank = min(range(processes), key=lambda p: (loads[p], p))
            whole[rank].append(j)
            loads[rank] += groups[j]
    return Deal([sorted(w) for w in whole], shared, units)


# ------------------------------------------------------------------------------------ the processes


class Processes:
    """The processes of this run: just this one, or the ones a launcher started (accelerate's
    ``PartialState``, created only when launched)."""

    def __init__(self, state: PartialState | None = None) -> None:
        self.state = state

    @classmethod
    def start(cls, device: str) -> Processes:
        """Join the launched processes (gloo on the CPU, NCCL on GPUs); ``device`` is the run's setting.

        Raises :class:`pure.launch.LaunchError` when accelerate would not see every launched process."""
        if launched_processes() == 1:
            return cls()
        import torch
        from accelerate import PartialState

        state = PartialState(cpu=device == "cpu" or not torch.cuda.is_available())
        check_processes(state.num_processes)
        return cls(state)

    @property
    def count(self) -> int:
        return 1 if self.state is None else self.state.num_processes

    @property
    def rank(self) -> int:
        return 0 if self.state is None else self.state.process_index

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, name: str) -> str:
        """This process's device for the setting ``name``: under a launcher ``auto`` and ``cuda`` mean its
        own GPU (``cuda:<local rank>``); anything else, and every setting of a plain run, as given."""
        if self.state is None or name not in ("auto", "cuda"):
            if name.startswith("cuda"):  # no CUDA device: one line now, before an output folder is made
                from pure.model import pick_device

                pick_device(name)
            return name
        from pure.model import pick_device

        device = pick_device(name, default=self.state.device)
        if device.type == "cuda":
            return str(self.state.device)
        return device.type  # "cpu", never accelerate's "cpu:0" (safetensors rejects it)

    def plan(self, make: Callable[[], Plan]) -> Plan:
        """``make()`` on the main process, sent to every process; a :class:`PureError` it raises is raised
        on every process (each then exits 2)."""
        if self.state is None:
            return make()
        from accelerate.utils import broadcast_object_list

        result: list[Plan | PureError | None] = [None]
        if self.is_main:
            try:
                result[0] = make()
            except PureError as err:
                result[0] = err
        broadcast_object_list(result)
        plan = result[0]
        if isinstance(plan, PureError):
            raise plan
        return plan

    def restore(
        self,
        plan: Plan,
        load: Callable[[], ImageRestorer],
        settings: RestoreConfig,
        run_info: dict,
        progress: bool = True,
        loaded: Callable[[], None] = lambda: None,
    ) -> Summary:
        """Restore ``plan`` across the processes (see the module docstring); ``load()`` loads this
        process's restorer (a :class:`pure.pipeline.Restorer` when images are shared), on the main
        process first. ``loaded()`` runs on the main process once every process has loaded (to say what
        the run will do: after any process's load error, never before it). Returns the whole run's
        summary on every process; a process interrupted (Ctrl-C, SIGTERM) joins no other process and
        returns :meth:`_interrupted`'s."""
        if self.state is None:
            restorer = load()
            loaded()
            return restore_plan(plan, restorer, run_info, progress)
        before = _finished(plan) if self.is_main else {}
        summary = Summary(plan.output)
        try:
            groups = [_groups(job, settings) for job in plan.jobs] if self.is_main else []
            from accelerate.utils import broadcast_object_list

            sent = [groups]
            broadcast_object_list(sent)
            dealt = deal(sent[0], self.count)
            mine = dealt.whole[self.rank]
            shared = [plan.jobs[j] for j in dealt.shared]
            if self.is_main:
                print(
                    f"{len(plan.jobs)} images on {self.count} processes: {len(plan.jobs) - len(shared)} "
                    f"whole, {len(shared)} shared by tile groups; the progress bars show process 1's part",
                    file=sys.stderr,
                )
            restorer = self._load(load, bool(mine or dealt.units[self.rank]))
            if self.is_main:
                loaded()
            if shared:
                self._restore_shared(plan, shared, dealt, restorer, run_info, progress, summary)
            if not summary.interrupted and mine:
                own = _part(plan, [plan.jobs[j] for j in mine])
                _add(summary, restore_plan(own, restorer, run_info, progress and self.is_main))
            if not summary.interrupted:
                return self._whole_run(plan, summary)
        except KeyboardInterrupt:  # while loading, or waiting for the others
            pass
        return self._interrupted(plan, summary, before)

    # -------------------------------------------------------------------------------------- parts

    def _load(self, load: Callable[[], ImageRestorer], needed: bool) -> ImageRestorer | None:
        """Load on the main process first (it fetches or writes shared files), then on the others.

        A process that cannot load (weights missing on its machine, its GPU full) raises its own error, and
        every other process a :class:`PureError` naming it, before any restores: the others used to go on
        alone and fail at their first exchange with a traceback of the closed connection."""
        from accelerate.utils import gather_object

        restorer = None
        for turn in (True, False):  # the main process's turn, then the others'
            error = None
            if needed and self.is_main == turn:
                try:
                    restorer = load()
                except Exception as err:  # raised below, once every process knows
                    error = err
            texts = gather_object([None if error is None else _load_error(error)])
            if error is not None:
                raise error
            failed = [(rank, text) for rank, text in enumerate(texts) if text is not None]
            if failed:
                rank, text = failed[0]
                raise PureError(f"process {rank + 1} of {self.count} could not load the models: {text}")
        return restorer

    def _restore_shared(
        self,
        plan: Plan,
        shared: list[Job],
        dealt: Deal,
        restorer: TileRestorer,
        run_info: dict,
        progress: bool,
        summary: Summary,
    ) -> None:
        """Answer this process's tiles of the shared images, gather every answer, write the images this
        process owns."""
        from accelerate.utils import gather_object

        groups: dict[int, list[int]] = {}  # shared image -> this process's tile groups of it
        for k, group in dealt.units[self.rank]:
            groups.setdefault(k, []).append(group)
        rows, errors, seconds = {}, {}, {}
        size = group_size(restorer.settings)
        bar = tqdm(
            total=len(dealt.units[self.rank]),
            desc="tile groups of shared images",
            unit="group",
            disable=not (progress and self.is_main),
        )
        try:
            for k, mine in groups.items():
                tick = time.perf_counter()
                try:
                    tiles = restorer.prepare_tiles(read_image(shared[k].source).rgb)
                    count = len(tiles.boxes)
                    indices = [t for g in mine for t in range(g * size, min(g * size + size, count))]
                    answers = restorer.answer_tiles(tiles, indices)
                    rows.update({(k, seed): row for seed, row in answers.items()})
                except Exception as err:  # the owner reports it as this image's failure
                    errors[k] = _failure(shared[k], err)
                seconds[k] = time.perf_counter() - tick
                bar.update(len(mine))
        except KeyboardInterrupt:
            summary.interrupted = True
            return
        finally:
            bar.close()
        parts = gather_object([(rows, errors, seconds)])
        for k, job in enumerate(shared):
            if dealt.owner(k) != self.rank:
                continue
            failed = [e[k] for _, e, _ in parts if k in e]
            if failed:
                summary.failed.append(failed[0])
                tqdm.write(one_line(f"failed: {failed[0]}"), file=sys.stderr)
                continue
            answers = {seed: row for r, _, _ in parts for (image, seed), row in r.items() if image == k}
            info = {
                **run_info,
                "shared": {
                    "processes": self.count,
                    "tiles_by_process": [sum(image == k for image, _ in r) for r, _, _ in parts],
                    "answer_s_by_process": [s.get(k, 0.0) for _, _, s in parts],
                },
            }
            _add(
                summary,
                restore_plan(_part(plan, [job]), restorer.replaying(answers), info, False),
            )

    def _whole_run(self, plan: Plan, summary: Summary) -> Summary:
        """The plan's own counts plus every process's restored and failed images."""
        from accelerate.utils import gather_object

        total = Summary.of(plan)
        for part in gather_object([summary]):
            _add(total, part)
        return total

    def _interrupted(self, plan: Plan, summary: Summary, before: dict[int, tuple[int, int]]) -> Summary:
        """The summary of an interrupted run, made without the other processes (they may be waiting
        elsewhere): the plan's counts, this process's failures, and on the main process every image whose
        outputs were all written since ``before`` (:func:`_finished` then), by any process."""
        total = Summary.of(plan)
        _add(total, summary)
        total.interrupted = True
        if self.is_main:
            now = _finished(plan)
            total.restored = sum(now[j] != before.get(j) for j in now)
        return total


# ------------------------------------------------------------------------------------ shared images


def _add(summary: Summary, part: Summary) -> None:
    """Count ``part``'s restored and failed images (and its interruption) in ``summary``."""
    summary.restored += part.restored
    summary.failed += part.failed
    summary.interrupted |= part.interrupted


def _part(plan: Plan, jobs: list[Job]) -> Plan:
    """Some of ``plan``'s jobs, with its settings (``--overwrite``: an earlier output in the other format
    goes) but not its counts (skipped and failed inputs are counted once, in :meth:`Processes._whole_run`)."""
    return Plan(plan.output, jobs=jobs, overwrite=plan.overwrite)


def _finished(plan: Plan) -> dict[int, tuple[int, int]]:
    """The jobs of ``plan`` whose outputs are all on disk, with their sidecar's inode and modification time:
    an output written (atomically: a new file in its place) since changes them."""
    found = {}
    for j, job in enumerate(plan.jobs):
        try:
            if all(path.exists() for path in job.outputs()):
                stat = job.sidecar.stat()
                found[j] = (stat.st_ino, stat.st_mtime_ns)
        except OSError:  # gone since, or unreadable: not counted
            continue
    return found


def _groups(job: Job, settings: RestoreConfig) -> int:
    """:func:`tile_groups` of ``job``'s image: of its size when planned, else read from its header now (1
    when it can no longer be read: it fails later, once)."""
    if job.size is not None:
        return tile_groups(job.size, settings)
    try:
        return tile_groups(read_header(job.source).size, settings)
    except ImageReadError:
        return 1


def _load_error(err: Exception) -> str:
    """One line for the other processes on why this one could not load: a :class:`PureError`'s message, or
    the type and first line of anything else (its traceback is printed by the process that raised it)."""
    if isinstance(err, PureError):
        return one_line(str(err))
    return f"{type(err).__name__}: {(str(err).splitlines() or [''])[0]}"


def _failure(job: Job, err: Exception) -> str:
    """The failure line :func:`pure.infer.restore_plan` writes for an image."""
    return str(err) if str(job.source) in str(err) else f"{job.source}: {err}"
