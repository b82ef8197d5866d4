"""Inference across processes (issue 15): how the work is dealt, a shared image's answers replayed, and
real runs of two CPU processes (``accelerate launch --multi_gpu --num_processes 2``, gloo) compared
with one process: outputs, summary, exit code, a killed run resumed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest
import torch
from PIL import Image

from pure.cli import infer_main
from pure.config import InferConfig, RestoreConfig, load_config
from pure.distributed import Deal, Processes, deal, tile_groups
from pure.launch import WORLD_SIZE_VARIABLES
from tests.launcher import accelerate_launch

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"
SHARED_HR = Path(os.environ.get("PURE_SHARED_DATA", ROOT.parent / "shared" / "data")) / "realsr-mini" / "hr"
RESTORE = ["--outscale", "2", "--tile", "64", "--tile-overlap", "16", "--batch-size", "1"]
"""Small tiles, one per batch: the 72x56 crop becomes 6 tile groups (batches), the 40x40 one 4."""
CROPS = {"a": (0, 0, 40, 40), "b": (40, 0, 112, 56), "c": (100, 100, 132, 132), "d": (0, 60, 24, 100)}


# ---------------------------------------------------------------------------------------- the deal


def _check_partition(dealt: Deal, groups: list[int]) -> None:
    whole = [j for part in dealt.whole for j in part]
    assert sorted(whole + dealt.shared) == list(range(len(groups)))
    units = sorted(u for part in dealt.units for u in part)
    assert units == [(k, b) for k, j in enumerate(dealt.shared) for b in range(groups[j])]


def test_fewer_images_than_processes_share_every_tile_batch():
    dealt = deal([5, 1, 3], 4)
    _check_partition(dealt, [5, 1, 3])
    assert dealt.shared == [0, 2]  # the one-batch image cannot be shared
    assert [len(u) for u in dealt.units] == [2, 2, 2, 2]  # 8 groups, round-robin across the images
    assert dealt.whole == [[1], [], [], []]  # to the least-loaded process (ties: the lowest rank)
    assert [dealt.owner(k) for k in range(2)] == [0, 1]


def test_full_rounds_go_whole_and_the_largest_leftovers_are_shared():
    groups = [4, 6, 1, 2, 1]
    dealt = deal(groups, 2)
    _check_partition(dealt, groups)
    assert dealt.shared == [1]  # 5 images on 2 processes: one left over, the largest
    assert dealt.units == [[(0, 0), (0, 2), (0, 4)], [(0, 1), (0, 3), (0, 5)]]
    assert dealt.whole == [[0], [2, 3, 4]]  # 3 + 4 groups against 3 + 4
    assert deal(groups, 1).whole == [[0, 1, 2, 3, 4]] and deal(groups, 1).shared == []


def test_many_images_are_balanced():
    groups = [(7 * j) % 5 + 1 for j in range(40)]
    dealt = deal(groups, 8)
    _check_partition(dealt, groups)
    assert dealt.shared == []
    loads = [sum(groups[j] for j in part) for part in dealt.whole]
    assert max(loads) - min(loads) <= max(groups)


def test_tile_groups_count_the_generations():
    settings = RestoreConfig(outscale=2, tile=64, tile_overlap=16, batch_size=1)
    assert tile_groups((72, 56), settings) == 6  # 144 x 112 px: 3 x 2 tiles
    assert tile_groups((40, 40), RestoreConfig(outscale=2, tile=64, tile_overlap=16, batch_size=3)) == 2
    assert tile_groups((10, 10), settings) == 1
    assert tile_groups((72, 56), RestoreConfig(outscale=2, tile=64, tile_overlap=16, batch_size="auto")) == 6


def test_a_plain_run_joins_no_processes(monkeypatch):
    for name in WORLD_SIZE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    processes = Processes.start("auto")
    assert processes.state is None and (processes.count, processes.rank, processes.is_main) == (1, 0, True)
    assert processes.device("auto") == "auto" and processes.plan(lambda: "the plan") == "the plan"


class _SecondProcessWrites:
    """A restorer on process 1 of 2 during whose image process 2 writes its own (``other``); then it
    fails or is interrupted."""

    def __init__(self, other, raised: BaseException) -> None:
        self.other, self.raised = other, raised

    def restore(self, image, alpha=None, on_step=None):
        for path in self.other.outputs():
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(b"written by process 2")
        raise self.raised


@pytest.mark.parametrize("where", ["restoring", "waiting for the others"])
def test_an_interrupted_process_1_counts_the_images_every_process_wrote(tmp_path, monkeypatch, where):
    """Ctrl-C or SIGTERM on the main process (while it restores, or waits in the gather) reports the
    images written by any process since the run started, not its own alone (0: "nothing written")."""
    from pure.plan import plan_outputs

    for name in ("a", "b", "c"):
        Image.new("RGB", (24, 24)).save(tmp_path / f"{name}.png")
    out = tmp_path / "out"
    out.mkdir()
    for path in [out / "c.png", out / "c.json"]:  # an earlier run's output, replaced by this run
        path.write_bytes(b"an earlier run")
    plan = plan_outputs(tmp_path, out, existing="overwrite")
    a, b, c = plan.jobs
    stopped = where == "restoring"
    restorer = _SecondProcessWrites(b, KeyboardInterrupt() if stopped else ValueError("bad pixels"))

    def gather_object(objects):
        if objects == [None]:  # the processes' turns to load: every one loaded
            return [None, None]
        raise KeyboardInterrupt

    monkeypatch.setattr("accelerate.utils.broadcast_object_list", lambda objects: objects)
    monkeypatch.setattr("accelerate.utils.gather_object", gather_object)
    state = SimpleNamespace(num_processes=2, process_index=0, wait_for_everyone=lambda: None)
    processes = Processes(state)
    settings = RestoreConfig(outscale=2, tile=64, tile_overlap=16, batch_size=1)
    assert deal([tile_groups((24, 24), settings)] * 3, 2).whole == [[0, 2], [1]]  # a and c here, b there
    summary = processes.restore(plan, lambda: restorer, settings, {}, progress=False)
    assert summary.interrupted and summary.exit_code() == 130
    assert summary.restored == 1  # b, by process 2; c's outputs are the earlier run's
    assert len(summary.failed) == (0 if stopped else 2)  # a and c, restored here
    assert "1 restored" in summary.line() and "outputs in" in summary.line()


@pytest.mark.parametrize(("rank", "failing"), [(0, 1), (1, 0)])
def test_a_process_that_cannot_load_stops_every_process_in_one_line(tmp_path, monkeypatch, rank, failing):
    """One process cannot load the models (weights missing on its machine): every other process stops
    before it restores anything, with one line naming that process (they went on alone and failed at
    their first exchange with gloo's traceback of a closed connection, or waited for it)."""
    from pure.errors import PureError
    from pure.plan import plan_outputs

    for name in ("a", "b"):
        Image.new("RGB", (24, 24)).save(tmp_path / f"{name}.png")
    plan = plan_outputs(tmp_path, tmp_path / "out")
    turns: list[int] = []

    def gather_object(objects):  # the main process loads in the first turn, the others in the second
        turns.append(len(turns))
        texts = [None, None]
        texts[rank] = objects[0]
        if failing != rank and turns[-1] == (failing != 0):
            texts[failing] = "no weights in models/ on this machine"
        return texts

    def load():
        return SimpleNamespace(restore=lambda *args, **kwargs: pytest.fail("an image was restored"))

    monkeypatch.setattr("accelerate.utils.broadcast_object_list", lambda objects: objects)
    monkeypatch.setattr("accelerate.utils.gather_object", gather_object)
    state = SimpleNamespace(num_processes=2, process_index=rank, wait_for_everyone=lambda: None)
    settings = RestoreConfig(outscale=2, tile=64, tile_overlap=16, batch_size=1)
    expected = f"^process {failing + 1} of 2 could not load the models: no weights in models/ on this machine"
    announced = []
    with pytest.raises(PureError, match=expected):
        Processes(state).restore(plan, load, settings, {}, progress=False, loaded=lambda: announced.append(1))
    assert announced == []  # the work line never comes before another process's load error


def test_the_work_line_waits_for_every_process_to_load(tmp_path, monkeypatch):
    """The main process says what the run will do (``loaded``) after both processes' turns to load, not
    after its own (another process's load error came after the work line)."""
    from pure.plan import plan_outputs

    Image.new("RGB", (24, 24)).save(tmp_path / "a.png")
    plan = plan_outputs(tmp_path, tmp_path / "out")
    events: list[str] = []

    def gather_object(objects):
        events.append("turn")
        if objects == [None] and events.count("turn") <= 2:
            return [None, None]
        raise KeyboardInterrupt  # stop before restoring: only the order of the loading matters here

    monkeypatch.setattr("accelerate.utils.broadcast_object_list", lambda objects: objects)
    monkeypatch.setattr("accelerate.utils.gather_object", gather_object)
    state = SimpleNamespace(num_processes=2, process_index=0, wait_for_everyone=lambda: None)
    settings = RestoreConfig(outscale=2, tile=64, tile_overlap=16, batch_size=1)
    restorer = SimpleNamespace(restore=lambda *args, **kwargs: (_ for _ in ()).throw(KeyboardInterrupt()))
    Processes(state).restore(
        plan, lambda: restorer, settings, {}, progress=False, loaded=lambda: events.append("work line")
    )
    assert events[:3] == ["turn", "turn", "work line"]


# ---------------------------------------------------------------------------------------- shared images


@pytest.fixture(scope="module")
def crops(tmp_path_factory) -> Path:
    """Four small crops of a real photo (a smooth synthetic image without ../shared/data)."""
    folder = tmp_path_factory.mktemp("lq")
    files = sorted(SHARED_HR.glob("*.png")) if SHARED_HR.is_dir() else []
    if files:
        photo = Image.open(files[0]).convert("RGB")
    else:
        photo = Image.linear_gradient("L").resize((160, 160)).convert("RGB")
    for name, box in CROPS.items():
        photo.crop(box).save(folder / f"{name}.png")
    return folder


@pytest.fixture
def one_thread():
    """One torch thread, as each launched process has (OMP_NUM_THREADS=1), and the fastest on a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_replayed_answers_restore_exactly_as_one_process(crops, one_thread):
    """Two processes' halves of an image's tile groups, answered apart and replayed, give the image
    one process restores (the mechanism of a shared image, in one process)."""
    from pure.pipeline import Restorer

    settings = ["tile=64", "tile_overlap=16", "batch_size=1", "outscale=2", "max_text_tokens=4"]
    cfg = load_config(InferConfig, TINY, [f"restore.{setting}" for setting in settings])
    restorer = Restorer.from_config(cfg)
    image = Image.open(crops / "a.png").convert("RGB")
    tiles = restorer.prepare_tiles(image)
    answers = {}
    for rank in (1, 0):  # either order; groups of one tile, as restore.batch_size=1 makes them
        answers.update(restorer.answer_tiles(tiles, list(range(rank, len(tiles.boxes), 2))))
    alone, replayed = restorer.restore(image), restorer.replaying(answers).restore(image)
    assert alone.image.tobytes() == replayed.image.tobytes()
    assert (alone.entropy_map == replayed.entropy_map).all()
    assert alone.tile_answers == replayed.tile_answers and len(alone.tile_answers) == 4
    with pytest.raises(KeyError):
        restorer.replaying({}).restore(image)


# ---------------------------------------------------------------------------------------- real launches


def _infer_args(source: Path, out: Path, *extra: str) -> list[str]:
    return ["-i", str(source), "-o", str(out), "--config", str(TINY), *RESTORE, "--save-entropy-map"] + [
        "--no-progress",
        *extra,
        "restore.max_text_tokens=4",
    ]


def _images(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.png"))}


@pytest.fixture(scope="module")
def one_process(crops, tmp_path_factory) -> Path:
    """The four crops restored by one process with one torch thread, as each launched process has
    (OMP_NUM_THREADS=1): on the CPU the thread count changes a few pixels by 1/255."""
    out = tmp_path_factory.mktemp("one") / "out"
    threads = torch.get_num_threads()
    try:
        assert infer_main(_infer_args(crops, out, "--threads", "1")) == 0
    finally:
        torch.set_num_threads(threads)
    assert len(_images(out)) == 8
    return out


@pytest.mark.slow
def test_two_processes_restore_each_image_once_as_one_process(crops, one_process, tmp_path):
    """Five images on two processes: four whole (one of them unreadable, failing on process 2), the
    largest shared by tile groups; outputs byte-identical to one process, one summary, exit code 1."""
    source = tmp_path / "lq"
    shutil.copytree(crops, source)
    whole = (crops / "c.png").read_bytes()  # a synthetic crop (no ../shared/data) compresses to ~120 bytes
    (source / "e.png").write_bytes(whole[: min(400, len(whole) // 2)])  # a 32x32 header, then too little
    settings = RestoreConfig(outscale=2, tile=64, tile_overlap=16, batch_size=1)  # as RESTORE
    groups = [tile_groups(Image.open(source / f"{n}.png").size, settings) for n in "abcde"]
    assert deal(groups, 2) == Deal(
        [[0], [2, 3, 4]], [1], [[(0, 0), (0, 2), (0, 4)], [(0, 1), (0, 3), (0, 5)]]
    )
    out = tmp_path / "out"
    run = subprocess.run(
        accelerate_launch("infer.py", *_infer_args(source, out)),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    summaries = [line for line in run.stdout.splitlines() if "restored" in line]
    assert summaries == [f"4 restored, 0 skipped (output exists), 1 failed; outputs in {out}"], run.stderr
    assert run.returncode == 1  # the launcher fails when any process's image failed
    assert "5 images on 2 processes: 4 whole, 1 shared by tile groups" in run.stderr
    assert run.stderr.count("failed: ") == 1 and f"failed: {source / 'e.png'}" in run.stderr
    assert _images(out) == _images(one_process)
    for name in CROPS:
        mine, alone = (json.loads((folder / f"{name}.json").read_text()) for folder in (out, one_process))
        for sidecar in (mine, alone):
            for key in ("input", "output", "entropy_map", "timings_s"):
                sidecar.pop(key)
        shared = mine.pop("shared", None)
        assert mine == alone, name
        if name == "b":  # 6 tile groups, 3 answered by each process
            assert shared["processes"] == 2 and shared["tiles_by_process"] == [3, 3]
            assert all(seconds > 0 for seconds in shared["answer_s_by_process"])
        else:
            assert shared is None


@pytest.mark.slow
def test_killed_run_resumes_with_skip_existing(crops, one_process, tmp_path):
    out = tmp_path / "out"
    launcher = subprocess.Popen(
        accelerate_launch("infer.py", *_infer_args(crops, out)),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 600
    try:
        while not list((out / "entropy").glob("*.png")) and launcher.poll() is None:
            assert time.monotonic() < deadline, "no image was restored in 10 minutes"
            time.sleep(0.05)
    finally:  # the processes first (torch's launcher starts each in its own session), then the launcher
        for process in [*psutil.Process(launcher.pid).children(recursive=True), launcher]:
            process.kill()
        launcher.wait()
    done = {p.stem for p in out.glob("*.png")}
    assert done and done != set(CROPS), "the run was not killed half way"

    run = subprocess.run(
        accelerate_launch("infer.py", *_infer_args(crops, out, "--skip-existing")),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    restored = len(CROPS) - len(done)
    assert f"{restored} restored, {len(done)} skipped (output exists), 0 failed" in run.stdout
    assert _images(out) == _images(one_process)


@pytest.mark.slow
def test_overwrite_in_the_other_format_replaces_every_earlier_output(crops, one_process, tmp_path):
    """--ext jpg --overwrite on two processes after a PNG run: each image's earlier PNG goes once its JPEG
    is whole, as in one process, for the images restored whole and the one shared by tile groups."""
    source, out = tmp_path / "lq", tmp_path / "out"
    shutil.copytree(crops, source)
    (source / "d.png").unlink()  # three images: two whole, the largest (b) shared
    shutil.copytree(one_process, out)
    run = subprocess.run(
        accelerate_launch("infer.py", *_infer_args(source, out, "--ext", "jpg", "--overwrite")),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    assert "3 images on 2 processes: 2 whole, 1 shared by tile groups" in run.stderr
    assert sorted(p.name for p in out.glob("*.*g")) == ["a.jpg", "b.jpg", "c.jpg", "d.png"]
