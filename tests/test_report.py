"""report.html as a user gets it: written at the end of training, rebuilt by `cnnkit report`,
self-contained (every image inline and decodable, no network), under 5 MB, with each task's
own sections, and rendered by a real browser (`cnnkit compare` and sweeps are in
test_compare_sweep.py)."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from browser import artifact, browser, needs_browser
from cnnkit.cli import main
from cnnkit.report import build_report
from cnnkit.report.run import recipe
from report_pages import assert_self_contained, inline_images

CLASSIFIER_SECTIONS = (
    "Summary",
    "Recipe",
    "Training curves",
    "Test evaluation",
    "Confusion matrix",
    "Top losses",
    "Calibration",
    "An augmented batch",
    "What the network learned",
)


def test_training_writes_a_self_contained_report(cls_run):
    page = cls_run.run_dir / "report.html"
    html = assert_self_contained(page)
    for title in CLASSIFIER_SECTIONS:
        assert f"<h2>{title}" in html, title
    assert "<h3>Most confused pairs</h3>" in html and "<h3>First-layer filters" in html
    images = inline_images(html)
    for alt in (
        "training and validation curves",
        "confusion matrix, counts",
        "confusion matrix, normalised by row",
        "top losses with Grad-CAM",
        "reliability diagram",
        "augmented training images",
        "first-layer filters",
        "feature maps",
    ):
        assert min(images[alt].size) > 32, alt
    # the figures are the run's own: its test accuracy, its classes in the per-class table
    metrics = json.loads((cls_run.run_dir / "metrics.json").read_text())
    assert f"<b>{metrics['test_accuracy']:.2%}</b>" in html
    for name in (cls_run.run_dir / "classes.txt").read_text().split():
        assert f"<td>{name}</td>" in html


def test_report_rebuilds_from_the_command_line_elsewhere(cls_run, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the run's data is found from any working directory
    out = tmp_path / "again.html"
    assert main(["report", str(cls_run.run_dir), "--out", str(out)]) == 0
    assert "report written to" in capsys.readouterr().out
    html = assert_self_contained(out)
    assert "<h2>Top losses" in html


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["report", "no-such-run"], "no such run folder"),
        (["report", "."], "is not a run folder"),
        (["report", "{run}", "--out", "page.pdf"], "must end in .html"),
        (["report", "{run}", "--out", "missing/page.html"], "does not exist"),
        (["compare", "{run}"], "at least two different runs"),
        (["compare", "{run}", "{run}"], "at least two different runs"),
        (["report", "{run}/metrics.json"], "is a file: give its run folder"),
    ],
)
def test_bad_report_requests_are_one_line(cls_run, tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    code = main([a.format(run=cls_run.run_dir) for a in args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err


def test_report_shows_the_export_parity_table(cls_run, tmp_path):
    from cnnkit.export import export_model

    run_dir = tmp_path / "run"
    shutil.copytree(cls_run.run_dir, run_dir)
    result = export_model(run_dir, "onnx")
    html = build_report(run_dir).read_text()
    assert "<h2>Export parity" in html
    assert f"<td>{result.path.name}</td>" in html and "<td>yes</td>" in html


@pytest.mark.parametrize(
    ("fixture", "titles"),
    [
        (
            "tiny_detector_run",
            ("Precision-recall", "Predicted vs true boxes", "An augmented batch"),
        ),
        ("tiny_segmenter_run", ("Pixel confusion matrix", "Predicted vs true masks")),
    ],
)
def test_detection_and_segmentation_reports_show_their_own_plots(request, fixture, titles):
    run, _ = request.getfixturevalue(fixture)
    html = assert_self_contained(run.run_dir / "report.html")
    for title in ("Summary", "Training curves", "Test evaluation", *titles):
        assert f"<h2>{title}" in html, title
    assert "Top losses" not in html  # a classifier's section


def test_large_pictures_are_inlined_as_jpeg_under_the_budget():
    import numpy as np

    from cnnkit.report.page import MAX_SIDE, PNG_BUDGET, compact

    noise = np.random.default_rng(0).integers(0, 255, (2000, 2400, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="PNG")
    assert len(buffer.getvalue()) > PNG_BUDGET
    data, mime = compact(buffer.getvalue())
    assert mime == "image/jpeg" and len(data) < len(buffer.getvalue())
    assert max(Image.open(io.BytesIO(data)).size) == MAX_SIDE
    small = io.BytesIO()
    Image.fromarray(noise[:40, :40]).save(small, format="PNG")
    assert compact(small.getvalue()) == (small.getvalue(), "image/png")


def test_recipe_lists_what_differs_from_the_defaults():
    shown = recipe(
        {"model": "simple_cnn", "lr": 0.003, "dropout": 0.0, "project": "x", "data": "d"}
    )
    assert shown["lr"] == 0.003 and "dropout" not in shown and "project" not in shown
    assert shown["model"] == "simple_cnn"  # always shown


@needs_browser
def test_the_report_renders_in_a_browser_with_every_image_loaded(cls_run):
    driver = browser(1280, 1000)
    try:
        driver.get((cls_run.run_dir / "report.html").resolve().as_uri())
        loaded = driver.execute_script(
            "return Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)"
        )
        assert len(loaded) >= 8 and all(loaded)
        height = driver.execute_script("return document.body.scrollHeight")
        driver.set_window_size(1280, min(int(height) + 100, 16000))
        shot = artifact("report.png")
        driver.save_screenshot(str(shot))
        assert Image.open(shot).size[1] > 1000
    finally:
        driver.quit()


def test_a_segmenters_report_says_the_readers_notes_once(tmp_path, capsys):
    """Training says how Penn-Fudan's instance masks are read; the report, reading the data
    again after training (to evaluate, to draw a batch), does not say it again."""
    import cnnkit

    shared = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "pennfudan"
    data = tmp_path / "pf"
    for folder in ("PNGImages", "PedMasks"):
        (data / folder).mkdir(parents=True)
    for photo in sorted((shared / "PNGImages").glob("*.png"))[:6]:
        shutil.copy(photo, data / "PNGImages" / photo.name)
        mask = f"{photo.stem}_mask.png"
        shutil.copy(shared / "PedMasks" / mask, data / "PedMasks" / mask)
    cnnkit.train(
        data=str(data),
        task="segment",
        model="lraspp",
        epochs=1,
        batch_size=4,
        image_size=64,
        val_split=0.34,
        precision="fp32",
        project=str(tmp_path / "runs"),
        name="s",
        progress=False,
    )
    said = capsys.readouterr()
    assert (tmp_path / "runs" / "s" / "report.html").is_file()
    assert (said.out + said.err).count("instance masks: object ids read as 'person'") == 1
