"""The web demo (pure/demo.py, scripts/app.py): per-job settings, the input limit, progress, --help and a
missing Gradio; one job through scripts/infer.py's writer (slow); the page in-process through
gradio_client (slow) and in headless Chromium (browser: ``python -m pytest -q -m browser``)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from pure.cli import app_main
from pure.config import BackboneConfig, ConfigError, InferConfig, load_config
from pure.demo import (
    TINY_NOTICE,
    DemoError,
    JobProgress,
    JobSettings,
    Models,
    cancellable,
    check_upload,
    job_settings,
    quantize_choices,
    restore_upload,
    upload_image,
)
from pure.errors import PureError

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "tiny.yaml")
SMALL = ["restore.tile=64", "restore.tile_overlap=16", "restore.outscale=2"]
"""Tiny models, 64 px tiles: a 40x24 input at x2 is two tiles, restored in about a second on the CPU."""
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
pytestmark = [  # Gradio 6.31's queue calls pandas in ways pandas 3 deprecates
    pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting' is deprecated"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
]


def settings(**changes) -> JobSettings:
    base = JobSettings(outscale=2, tile=64, seed=3, cfg_scale=0.8, temperature=0.9, color_fix="wavelet")
    return dataclasses.replace(base, **changes)


@pytest.fixture
def small_input(tmp_path: Path) -> Path:
    """A 40x24 crop of data/samples/chip.png."""
    path = tmp_path / "chip crop.png"
    with Image.open(ROOT / "data" / "samples" / "chip.png") as image:
        image.crop((40, 40, 80, 64)).save(path)
    return path


@pytest.fixture(scope="module")
def models() -> Models:
    from pure.pipeline import Restorer

    cfg = load_config(InferConfig, TINY, SMALL)
    return Models(cfg, Restorer.from_config(cfg), Restorer.from_config)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------- without models


def test_job_settings_are_checked_copies():
    cfg = load_config(InferConfig, TINY, SMALL)
    before = dataclasses.asdict(cfg)
    job = settings(outscale=3, tile=96, seed=7, caption="  a cat. ", kv_cache="int8")
    sampling, restore = job_settings(cfg, job)
    assert (restore.outscale, restore.tile, restore.caption, sampling.seed) == (3.0, 96, "a cat.", 7)
    assert restore.kv_cache == "int8"
    assert restore.tile_overlap == 16 and sampling.max_new_tokens == cfg.sampling.max_new_tokens
    assert dataclasses.asdict(cfg) == before  # the shared settings are never changed
    with pytest.raises(DemoError, match=r"tile 48 px: choose a multiple of 32 px of at least 32"):
        job_settings(cfg, settings(tile=48))
    with pytest.raises(DemoError, match=r"at least 64 \(restore.tile_overlap=32\)"):
        job_settings(load_config(InferConfig, TINY), settings(tile=32))
    with pytest.raises(ConfigError, match=r"restore.color_fix='sharpen': expected one of wavelet"):
        job_settings(cfg, settings(color_fix="sharpen"))
    with pytest.raises(ConfigError, match=r"restore.kv_cache='fp8': expected one of model, int8"):
        job_settings(cfg, settings(kv_cache="fp8"))
    with pytest.raises(ConfigError, match=r"sampling.temperature=0.0: must be at least"):
        job_settings(cfg, settings(temperature=0))
    tight = load_config(
        InferConfig, TINY, [*SMALL, "sampling.max_new_tokens=600"]
    )  # 160 px: 16 + 4 + 20 * 21
    assert job_settings(tight, settings(tile=160))[1].tile == 160
    with pytest.raises(
        ConfigError, match=r"a 192 px tile's answer can take 620 tokens .*restore.tile=160 or less"
    ):
        job_settings(tight, settings(tile=192))  # refused at once, not after generating 600 tokens
    for box, label in (("seed", "Seed"), ("outscale", "Scale"), ("cfg_scale", "Guidance")):
        with pytest.raises(DemoError, match=rf"^the {label} box is empty: enter a number$"):
            job_settings(cfg, settings(**{box: None}))  # what Gradio sends for a cleared box
    with pytest.raises(DemoError, match=r"^seed 2.5: enter a whole number$"):
        job_settings(cfg, settings(seed=2.5))  # Gradio's integer box rounded it to another seed before
    with pytest.raises(DemoError, match=r"^seed 1234567.5: enter a whole number$"):
        job_settings(cfg, settings(seed=1234567.5))  # as typed, not 1.23457e+06
    assert job_settings(cfg, settings(seed=4.0))[0].seed == 4  # the box sends floats


def test_a_failed_job_leaves_no_folder(small_input: Path, tmp_path: Path):
    """A job that fails (here: its model cannot load) leaves nothing in --output, not even its folder."""

    def broken(quantize):
        raise PureError("the backbone cannot load")

    models = SimpleNamespace(cfg=load_config(InferConfig, TINY, SMALL), restorer=broken)
    (tmp_path / "out").mkdir()
    with pytest.raises(PureError, match="cannot load"):
        restore_upload(small_input, settings(), models, tmp_path / "out", 64)
    assert list((tmp_path / "out").iterdir()) == []


def test_an_input_over_the_limit_is_one_line_naming_the_file_and_the_flag(small_input: Path, tmp_path: Path):
    assert check_upload(small_input, 40) == (40, 24)
    with pytest.raises(DemoError) as err:
        check_upload(small_input, 32)
    message = str(err.value)
    assert message == (
        "chip crop.png is 40x24 px; this page restores images up to 32 px on the longer side "
        "(scripts/app.py --max-side): crop or shrink it first, or use scripts/infer.py"
    )
    frames = [Image.new("RGB", (8, 8), c) for c in ("red", "blue")]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    with pytest.raises(DemoError, match=r"^anim.gif: ") as err:
        check_upload(tmp_path / "anim.gif", 64)
    assert str(tmp_path) not in str(err.value) and "\n" not in str(err.value)


def test_an_upload_pillow_cannot_open_is_pures_one_line(small_input: Path, tmp_path: Path):
    """Gradio's own image upload opens the file with Pillow first and shows a bare "Error" when that
    fails; the page's upload says what pure's reader says, naming the file."""
    gr = pytest.importorskip("gradio", reason='the demo extra is not installed: pip install -e ".[demo]"')
    from gradio.data_classes import ImageData

    upload = upload_image(gr, 64)
    assert upload.get_block_name() == "image"  # drawn as Gradio's image upload
    assert not list((ROOT / "pure").glob("*.pyi"))  # no stub written (Gradio does so for subclasses)
    assert upload.preprocess(ImageData(path=str(small_input), orig_name=small_input.name)) == str(small_input)
    cases = {
        "notes.png": (
            b"shopping list",
            r"^notes.png: not a readable image \(UnidentifiedImageError: cannot identify image file\)$",
        ),
        "phone.heic": (b"\0\0\0\x18ftypheic", r"^phone.heic: (HEIC/HEIF, an image format|not a readable)"),
    }
    for name, (data, expected) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(gr.Error) as err:
            upload.preprocess(ImageData(path=str(tmp_path / name), orig_name=name))
        assert re.match(expected, err.value.message), err.value.message
        assert str(tmp_path) not in err.value.message


def test_progress_counts_tiles_and_tokens():
    cfg = load_config(InferConfig, TINY, SMALL)
    reports: list[tuple[float, str]] = []
    progress = JobProgress(lambda fraction, line: reports.append((fraction, line)), cfg.restore)
    assert progress.answer_bound == 16 + 4 + 8 * 9  # max_text_tokens + the 64 px tile's image block
    progress.on_batch(0, 2, 3)
    progress.step(46)
    progress.step(46)
    progress.on_batch(2, 1, 3)
    progress.step(92)
    progress.finish()
    fractions = [f for f, _ in reports]
    assert fractions == sorted(fractions) and fractions[0] == 0 and fractions[-1] == 1
    assert reports[1] == (pytest.approx(1 / 3), "tiles 1-2 of 3: 92 tokens")
    assert reports[3] == (2 / 3, "2 of 3 tile(s) restored")
    assert progress.tokens == 2 * 92 + 92
    assert reports[-1][1] == "3 of 3 tile(s) restored; colour fix and writing the files"


def test_a_job_cancelled_twice_is_still_waited_for():
    """Stop pressed again while a cancelled job winds down: the second cancellation also waits for the job's
    thread (it returned at once, and Gradio started the next job beside the one still running)."""
    release = threading.Event()

    def work(check):
        release.wait(10)
        check()

    async def cancel_twice() -> bool:
        job = asyncio.ensure_future(cancellable(work))
        await asyncio.sleep(0.05)
        job.cancel()
        await asyncio.sleep(0.05)
        job.cancel()
        await asyncio.sleep(0.05)
        waiting = not job.done()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await job
        return waiting

    assert asyncio.run(cancel_twice())


def test_a_job_cancelled_after_its_last_report_leaves_no_folder(tmp_path: Path):
    """Stop during the colour fix and writing (no progress report comes after them): the job ends with its
    files, and nobody takes them."""
    folder, release = tmp_path / "chip-x1", threading.Event()

    def work(check):
        release.wait(10)
        folder.mkdir()
        (folder / "chip.png").write_bytes(b"")
        return SimpleNamespace(image=folder / "chip.png")

    async def cancel_while_writing() -> None:
        job = asyncio.ensure_future(cancellable(work))
        await asyncio.sleep(0.05)
        job.cancel()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await job

    asyncio.run(cancel_while_writing())
    assert not folder.exists()


def test_quantisation_choices_follow_the_schema():
    fields = {f.name: f for f in dataclasses.fields(BackboneConfig)}
    expected = fields["quantize"].metadata["choices"] if "quantize" in fields else None
    assert quantize_choices() == expected


def test_only_another_quantisation_reloads_the_backbone():
    if quantize_choices() is None:
        pytest.skip("the schema has no backbone.quantize")
    cfg = load_config(InferConfig, TINY)
    loads: list[str] = []

    def load(changed: InferConfig) -> str:
        loads.append(changed.backbone.quantize)
        return f"restorer {changed.backbone.quantize}"

    models = Models(cfg, "loaded", load)  # type: ignore[arg-type]
    assert models.restorer(None) == models.restorer("none") == "loaded" and loads == []
    assert models.restorer("int8") == "restorer int8" and models.quantize == "int8"
    assert models.restorer("int8") == "restorer int8" and loads == ["int8"]
    assert cfg.backbone.quantize == "none"  # the loaded config was copied, not changed
    with pytest.raises(ConfigError, match=r"backbone.quantize='int3': expected one of none"):
        models.restorer("int3")


def test_app_help_imports_no_heavy_library():
    code = (
        "import contextlib, io, sys\n"
        "from pure.cli import app_main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):\n"
        "    app_main(['--help'])\n"
        "heavy = ('torch', 'transformers', 'gradio', 'gradio_client', 'pyiqa', 'peft')\n"
        "print(sorted(m for m in heavy if m in sys.modules), '--max-side' in out.getvalue())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert result.stdout.strip() == "[] True"


def test_app_without_gradio_says_how_to_install_it(monkeypatch, capsys, broken_package):
    """Missing, or installed but not importable (it was found, the models loaded, and the page's import of
    Gradio ended in a traceback): one line naming the extra, before any model loads."""
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio: ModuleNotFoundError, as when absent
    assert app_main(["--config", TINY]) == 2
    assert capsys.readouterr().err == 'error: the web demo needs Gradio: pip install -e ".[demo]"\n'
    broken_package("gradio")
    monkeypatch.setattr("pure.pipeline.Restorer.from_config", lambda *a: pytest.fail("models loaded"))
    assert app_main(["--config", TINY]) == 2
    assert capsys.readouterr().err == (
        'error: the web demo needs Gradio: pip install -e ".[demo]" '
        "(gradio is installed but does not import: gradio lost a dependency)\n"
    )


def test_gradio_is_first_imported_with_its_temporary_folder_set(monkeypatch, capsys):
    """Gradio's modules read GRADIO_TEMP_DIR once, when imported: the check that Gradio imports came before
    the server's scratch folder was set, so Gradio's copies went to TMPDIR/gradio and outlived the server."""
    from pure.errors import PureError

    seen = []

    def require(module: str, needed: str, install: str) -> None:  # the check: here it stops the command
        seen.append(os.environ.get("GRADIO_TEMP_DIR"))
        raise PureError(f"{needed}: {install}")

    monkeypatch.delenv("GRADIO_TEMP_DIR", raising=False)
    monkeypatch.setattr("pure.cli.require", require)
    assert app_main(["--config", TINY]) == 2
    assert capsys.readouterr().err == 'error: the web demo needs Gradio: pip install -e ".[demo]"\n'
    assert seen[0] is not None, "Gradio was imported before its temporary folder was set"
    scratch = Path(seen[0]).parent
    assert Path(seen[0]).name == "gradio" and scratch.name.startswith("pure-demo-")
    assert not scratch.exists() and "GRADIO_TEMP_DIR" not in os.environ  # gone with the command


def test_app_refuses_bad_settings_in_one_line(capsys):
    assert app_main(["--config", TINY, "restore.color_fix=sharpen"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "restore.color_fix" in err
    assert app_main(["--config", TINY, "sampling.max_new_tokens=10"]) == 2  # before any model loads
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sampling.max_new_tokens=10" in err


def test_app_refuses_a_port_in_use_before_the_models_load(capsys, monkeypatch):
    import socket

    import pure.pipeline

    monkeypatch.setattr(pure.pipeline.Restorer, "from_config", lambda cfg: pytest.fail("models loaded"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert app_main(["--config", TINY, "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot serve on 127.0.0.1:{port} (") and "pass another --port" in err
    assert err.count("\n") == 1

    for host in ("192.0.2.1",):  # TEST-NET: not this machine's; checked with or without --port
        assert app_main(["--config", TINY, "--host", host]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: cannot serve on --host {host} (") and "pass an address of this" in err


def test_a_port_whose_server_just_stopped_is_free():
    """A server stopped with a page still connected closes that connection itself, which then holds the port
    for a minute (TIME_WAIT) without a server on it; the demo restarted on the same --port was refused as
    'already in use' (the server itself, uvicorn, binds with SO_REUSEADDR and would have started)."""
    from pure.demo import check_port

    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as page:
            connection, _ = server.accept()
            connection.close()  # the server closes first: its side of the connection lingers
            page.recv(1)
    check_port("127.0.0.1", port)  # no error


# ---------------------------------------------------------------------------- one job, tiny models


@pytest.mark.slow
def test_a_job_writes_what_infer_writes(models: Models, small_input: Path, tmp_path: Path):
    lines: list[str] = []
    result = restore_upload(
        small_input, settings(entropy_map=True), models, tmp_path, 64, lambda f, line: lines.append(line)
    )
    with Image.open(result.image) as restored:
        assert restored.size == (80, 48) and result.before.size == (80, 48)
    sidecar = json.loads(result.sidecar.read_text())
    assert sidecar["input_size"] == [40, 24] and sidecar["output_size"] == [80, 48] and sidecar["seed"] == 3
    assert sidecar["settings"]["restore"]["tile"] == 64 and sidecar["settings"]["restore"]["outscale"] == 2
    assert (sidecar["degradation"], sidecar["description"]) == (result.degradation, result.description)
    assert sidecar["entropy_map"] == str(result.entropy) and result.entropy.is_file()
    assert result.summary.startswith("40x24 -> 80x48 px (x2), 2 tile(s) of 64 px, 184 tokens, ")
    assert lines[0] == "0 of 2 tile(s) restored" and lines[-1].startswith("2 of 2 tile(s) restored; ")
    assert models.cfg.sampling.seed == 0 and models.current.sampling.seed == 0  # the job used a copy


# ---------------------------------------------------------------------------- the page


@pytest.fixture(scope="module")
def page(models: Models, tmp_path_factory):
    """The demo served in this process on a free port (not blocking)."""
    pytest.importorskip("gradio", reason='the demo extra is not installed: pip install -e ".[demo]"')
    from pure.demo import build_demo, launch

    output = tmp_path_factory.mktemp("demo")
    demo = launch(build_demo(models, output, 64), port=free_port(), folders=[output], block=False)
    yield demo
    demo.close()


@pytest.mark.slow
def test_the_page_restores_through_its_api(page, small_input: Path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    client = Client(page.local_url, verbose=False)
    (before, after), degradation, description, summary, entropy, files = client.predict(
        handle_file(str(small_input)),
        2,
        64,
        3,
        0.8,
        0.9,
        "wavelet",
        "",
        True,
        "int8",
        "none",
        api_name="/restore",
    )
    for path in (before, after):
        with Image.open(path) as image:
            assert image.size == (80, 48)
    png, sidecar = sorted(files, key=lambda p: Path(p).suffix != ".png")
    assert Path(png).name == "chip crop.png" and Path(sidecar).name == "chip crop.json"
    record = json.loads(Path(sidecar).read_text())
    assert (record["degradation"], record["description"]) == (degradation, description)
    assert record["input_size"] == [40, 24] and record["seed"] == 3 and record["model"]
    assert record["settings"]["restore"]["kv_cache"] == "int8"
    assert summary.startswith("40x24 -> 80x48 px (x2), 2 tile(s)") and Path(entropy["value"]).is_file()
    large = small_input.with_name("large.png")
    Image.new("RGB", (96, 40)).save(large)
    with pytest.raises(AppError, match=r"large.png is 96x40 px; this page restores images up to 64 px"):
        client.predict(
            handle_file(str(large)),
            2,
            64,
            0,
            0.8,
            0.9,
            "wavelet",
            "",
            False,
            "model",
            "none",
            api_name="/restore",
        )
    assert [fn.concurrency_limit for fn in page.fns.values()] == [1]
    assert TINY_NOTICE in json.dumps(page.config)


@pytest.mark.slow
def test_a_cancelled_job_stops_and_leaves_nothing_before_the_next_starts(page, small_input, monkeypatch):
    """Stop (or a closed page) cancels a running job: it stops at its next token and its folder goes,
    before the queue starts the next job (Gradio frees the job's place at once, and the cancelled job
    used to run on to the end beside the next one, on the same model, writing files for nobody)."""
    from gradio_client import Client, handle_file

    import pure.demo

    running: list[object] = []
    beside: list[int] = []  # how many jobs were restoring when each one started
    restore, step = pure.demo.ReportingRestorer.restore, pure.demo.JobProgress.step

    def tracked(self, image, alpha=None, on_step=None):
        beside.append(len(running))
        running.append(self)
        try:
            return restore(self, image, alpha, on_step)
        finally:
            running.remove(self)

    def slow_step(self, tokens):  # the tiny model is fast: give the page time to cancel mid-run
        time.sleep(0.01)
        step(self, tokens)

    monkeypatch.setattr(pure.demo.ReportingRestorer, "restore", tracked)
    monkeypatch.setattr(pure.demo.JobProgress, "step", slow_step)
    cancelled = small_input.with_name("cancelled.png")
    Image.open(small_input).resize((64, 64)).save(cancelled)  # 49 tiles of 32 px at x2
    job = ["wavelet", "", True, "model", "none"]
    client = Client(page.local_url, verbose=False)
    first = client.submit(handle_file(str(cancelled)), 2, 32, 0, 0.8, 0.9, *job, api_name="/restore")
    deadline = time.monotonic() + 120
    while not running:
        assert time.monotonic() < deadline and not first.done(), "the first job never started"
        time.sleep(0.01)
    first.cancel()
    *_, files = Client(page.local_url, verbose=False).predict(
        handle_file(str(small_input)), 2, 64, 0, 0.8, 0.9, *job, api_name="/restore"
    )
    sidecar = json.loads(Path(next(f for f in files if f.endswith(".json"))).read_text())
    assert beside == [0, 0]  # the second job started once the first had stopped
    assert not list(Path(sidecar["output"]).parents[1].glob("cancelled-*"))


# ---------------------------------------------------------------------------- a real browser


def chromium_driver():
    """Headless Debian Chromium through Selenium, or a skip naming what is missing."""
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="selenium is not installed: pip install selenium"
    )
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not path.is_file():
            pytest.skip(f"{path} not found: apt-get install -y {package}")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", "--window-size=1400,1400",
    ):  # fmt: skip
        options.add_argument(flag)
    profile = Path(os.environ.get("TMPDIR", "/tmp")) / f"pure-chromium-{os.getpid()}"
    options.add_argument(f"--user-data-dir={profile}")
    try:
        return webdriver.Chrome(options=options, service=webdriver.ChromeService(str(CHROMEDRIVER))), profile
    except Exception as err:  # no display libraries, a driver of another version, ...
        shutil.rmtree(profile, ignore_errors=True)
        pytest.skip(f"Chromium did not start: {str(err).splitlines()[0]}")


@pytest.mark.browser
def test_the_page_in_chromium(page, tmp_path: Path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    source = tmp_path / "chip.png"
    with Image.open(ROOT / "data" / "samples" / "chip.png") as image:
        image.crop((28, 28, 92, 92)).save(source)  # 64 x 64 px: nine 64 px tiles at x2
    driver, profile = chromium_driver()
    try:
        driver.get(page.local_url)
        wait = WebDriverWait(driver, 120)
        upload = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#upload input[type=file]"))
        upload.send_keys(str(source))
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#upload img"))
        driver.find_element(By.ID, "restore").click()
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#status").text.startswith("64x64 -> 128x128"))
        degradation = driver.find_element(By.CSS_SELECTOR, "#degradation textarea").get_attribute("value")
        assert degradation, "the perceived degradation is empty"
        assert len(driver.find_elements(By.CSS_SELECTOR, "#compare img")) == 2
        assert "tiny random model is loaded" in driver.find_element(By.ID, "tiny-notice").text
        driver.execute_script("window.scrollTo(0, 0)")
        screenshot = ROOT / "docs" / "demo.png"
        screenshot.parent.mkdir(exist_ok=True)
        assert driver.save_screenshot(str(screenshot))
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.parametrize(("sent", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_the_server_stopped_by_ctrl_c_or_sigterm_exits_as_interrupted(tmp_path: Path, sent, code):
    """Gradio's own wait swallows Ctrl-C; the server's exit code must still say it was interrupted, and its
    temporary job folder must go, with Gradio's copies of the page's files (by default Gradio keeps them
    in TMPDIR/gradio)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "TMPDIR": str(tmp_path), "GRADIO_ANALYTICS_ENABLED": "False", "GRADIO_TEMP_DIR": ""}
    command = [sys.executable, str(ROOT / "scripts" / "app.py"), "--config", TINY, "--port", str(port)]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert "the demo is at" in server.stdout.readline()
        assert list(tmp_path.glob("pure-demo-*"))  # the job folder exists while it serves
        server.send_signal(sent)
        _, err = server.communicate(timeout=60)
    finally:
        server.kill()
    assert server.returncode == code, err
    assert err.strip().splitlines()[-1] == "interrupted"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("outscale", "low", "high"), [(0.5, 0.5, 8), (4.0, 1, 8), (16.0, 1, 16)])
def test_the_scale_box_admits_the_configured_scale(outscale, low, high):
    """A configured restore.outscale outside 1..8 widens the box instead of failing every job."""
    gr = pytest.importorskip("gradio", reason='the demo extra is not installed: pip install -e ".[demo]"')
    from pure.demo import _settings

    with gr.Blocks():
        scale = _settings(gr, load_config(InferConfig, TINY, [f"restore.outscale={outscale}"]))[0]
    assert (scale.minimum, scale.maximum, scale.value) == (low, high, outscale)
