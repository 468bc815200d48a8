"""The HTML report: every plot present and decodable, honest numbers, notes for absent inputs,
one-line errors, and a headless Chromium check that the page really renders."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser

import pytest
from conftest import REPO, TinyNet

import netshrink
from netshrink.budget.sensitivity import SensitivityConfig, measure
from netshrink.cli import main
from netshrink.energy import energy_of_file
from netshrink.report.html import PLOT_IDS, ReportExtras, read_extras, render_html, write_html_report
from netshrink.report.inputs import read_runs, read_sensitivity
from netshrink.report.sizes import file_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RESNET20_RUNS = REPO / "benchmarks" / "results" / "oneshot-resnet20.json"
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


class PageParser(HTMLParser):
    """Figures (id -> class), images (figure id -> src) and link targets of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.figures: dict[str, str] = {}
        self.images: dict[str, str] = {}
        self.urls: list[str] = []
        self.rows: dict[str, int] = {}
        self._figure: str | None = None
        self._table: str | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if tag == "figure":
            self._figure = a["id"]
            self.figures[a["id"]] = a["class"]
        elif tag == "img":
            self.images[self._figure] = a["src"]
        elif tag == "table":
            self._table = a["id"]
        elif tag == "tr" and self._table:
            self.rows[self._table] = self.rows.get(self._table, 0) + 1
        self.urls += [v for k, v in attrs if k in ("src", "href")]


def parse(page: str) -> PageParser:
    parser = PageParser()
    parser.feed(page)
    return parser


@pytest.fixture
def nsk(tmp_path, tiny_net):
    path = tmp_path / "tiny.nsk"
    netshrink.compress(tiny_net, "oneshot-prune50-palette5", progress=False).save(path)
    return path


@pytest.fixture
def sensitivity_json(tmp_path, tiny_net, tiny_images):
    """A real `netshrink sensitivity` result of the tiny model, measured in well under a second."""
    config = SensitivityConfig(bits=(2, 4), sparsity=(0.5, 0.9), samples=64)
    ten_way = dataclasses.replace(tiny_images, label_names=tuple(map(str, range(10))))  # TinyNet has 10 outputs
    path = tmp_path / "sens.json"
    measure(tiny_net, ten_way, config, dataset="tiny", progress=False).write(path)
    return path


@pytest.fixture
def full_extras(nsk, sensitivity_json):
    """Everything the page can show: runs, sensitivity, accuracy and energy (TinyNet takes 3x8x8 images)."""
    extras = read_extras([str(RESNET20_RUNS)], str(sensitivity_json))
    extras.energy = energy_of_file(nsk, (3, 8, 8), model=TinyNet()).to_json()
    extras.evaluation = {"metric": "top1", "dataset": "tiny", "before": 0.9, "after": 0.88}
    return extras


def test_runs_are_found_in_every_benchmark_shape(tmp_path):
    bench = {
        "meta": {"ratio": "not a run"},
        "recipes": [{"model": "m", "recipe": "r1", "ratio": 4.0, "top1_after": 0.9}],
        "sweep": [
            {
                "ours": {"model": "m", "recipe": "palette2", "ratio": 14.0, "top1_after": 0.2},
                "coremltools": {
                    "tool": "coremltools 9.0",
                    "model": "m",
                    "bits": 2,
                    "per_channel": True,
                    "ratio": 13.0,
                    "top1_after": 0.25,
                },
            }
        ],
        "rows": [
            {"model": "m", "recipe": "dc", "ratio": 40.0, "top1_after": 0.98, "tensors": [{"ratio": 1}]},
            {"model": "m", "allocation": "auto", "stage": "one-shot", "file": "/tmp/a.nsk", "ratio": 8.0, "top1": 0.8},
        ],
    }
    (tmp_path / "b.json").write_text(json.dumps(bench))
    runs = read_runs(tmp_path / "b.json")
    assert [(r.label, r.series, r.ratio, r.accuracy) for r in runs] == [
        ("r1", "m", 4.0, 0.9),
        ("palette2", "m", 14.0, 0.2),
        ("2b per-channel", "m (coremltools 9.0)", 13.0, 0.25),
        ("dc", "m", 40.0, 0.98),
        ("auto, one-shot", "m", 8.0, 0.8),
    ]


def test_committed_benchmark_results_parse():
    runs = read_runs(RESNET20_RUNS)
    data = json.loads(RESNET20_RUNS.read_text())
    sweep_runs = [run for entry in data["sweep"] for run in entry.values() if isinstance(run, dict) and "ratio" in run]
    assert len(runs) == len(data["recipes"]) + len(sweep_runs) > len(data["recipes"])
    assert sum("coremltools" in r.series for r in runs) == len(data["sweep"])
    lenet = REPO / "benchmarks" / "results" / "retrain-lenet.json"
    assert len(read_runs(lenet)) == len(json.loads(lenet.read_text())["rows"]) > 0  # one point per row


def test_sparsity_is_counted_on_decoded_weights(nsk):
    weights = {t.name: t for t in file_report(nsk).tensors}
    assert weights["conv.weight"].sparsity == pytest.approx(0.5, abs=1 / 432)
    assert weights["fc.weight"].zeros == 10 * 1024 // 2
    assert weights["bn.running_var"].zeros == 0


def test_page_has_every_plot_decodable_and_is_self_contained(nsk, full_extras):
    report = file_report(nsk)
    page = render_html(report, full_extras)
    parsed = parse(page)
    assert parsed.figures == {plot_id: "plot" for plot_id in PLOT_IDS}
    for plot_id in PLOT_IDS:
        src = parsed.images[plot_id]
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG_MAGIC)
    assert all(url.startswith("data:") for url in parsed.urls)  # nothing fetched from a network
    assert parsed.rows["tensors"] + parsed.rows["other-tensors"] == 2 + len(report.tensors)
    assert parsed.rows["tensors"] == 1 + sum(t.is_layer_weight for t in report.tensors)
    assert parsed.rows["runs"] == 1 + len(full_extras.runs)
    assert f"{report.ratio:.2f}x" in page and f"{report.file_bytes:,} B" in page and "paper convention" in page
    assert "88.00%" in page and "-2.00 pp" in page  # the measured accuracy and its change
    assert "oneshot-prune50-palette5" in page  # the recipe from the header


def test_absent_inputs_become_notes_not_crashes(nsk):
    energy = {"available": False, "reason": "tiny.nsk: not a zoo model"}
    parsed = parse(render_html(file_report(nsk), ReportExtras(energy=energy)))
    missing = {"plot-energy", "plot-sensitivity", "plot-tradeoff"}
    assert parsed.figures == {p: "plot-missing" if p in missing else "plot" for p in PLOT_IDS}
    assert set(parsed.images) == set(PLOT_IDS) - missing


def test_cli_report_writes_the_page(capsys, nsk, tmp_path):
    out = tmp_path / "r.html"
    code = main(["report", str(nsk), "-o", str(out), "--runs", str(RESNET20_RUNS), "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["report"] == str(out) and result["runs"] == len(read_runs(RESNET20_RUNS))
    assert parse(out.read_text()).figures["plot-tradeoff"] == "plot"


def test_compress_report_has_energy_and_accuracy_plots(capsys, tmp_path):
    """`compress --report` on a zoo model (random LeNet-300): energy is estimated, runs are plotted."""
    from netshrink import zoo

    ckpt, out, html = tmp_path / "l300.nsk", tmp_path / "c.nsk", tmp_path / "c.html"
    netshrink.save(zoo.build_model("lenet300"), ckpt, name="lenet300", dataset="mnist")
    code = main(
        [
            "compress",
            str(ckpt),
            "--recipe",
            "oneshot-palette5",
            "-o",
            str(out),
            "--no-eval",
            "--report",
            str(html),
            "--runs",
            str(RESNET20_RUNS),
            "--json",
        ]
    )
    assert code == 0 and json.loads(capsys.readouterr().out)["report"] == str(html)
    figures = parse(html.read_text()).figures
    assert figures == {p: "plot-missing" if p == "plot-sensitivity" else "plot" for p in PLOT_IDS}


@pytest.mark.parametrize(
    "argv,message",
    [
        (["report", "{tmp}/missing.nsk", "-o", "{tmp}/r.html"], "missing.nsk: no such file"),
        (["report", "{tmp}/runs.json", "-o", "{tmp}/r.html"], "not a netshrink file"),
        (["report", "{nsk}", "-o", "{tmp}/r.html", "--runs", "{tmp}/bad.json"], "bad.json is not a readable JSON"),
        (["report", "{nsk}", "-o", "{tmp}/r.html", "--runs", "{tmp}/empty.json"], "no benchmark runs found"),
        (["report", "{nsk}", "-o", "{tmp}/r.html", "--runs", "{tmp}/nope.json"], "nope.json: no such file"),
        (
            ["report", "{nsk}", "-o", "{tmp}/r.html", "--sensitivity", "{tmp}/runs.json"],
            "not a `netshrink sensitivity`",
        ),
        (["report", "{nsk}", "-o", "{tmp}/no/dir/r.html"], "cannot write HTML report"),
        (["compress", "{nsk}", "--recipe", "fp16", "--runs", "{tmp}/runs.json"], "add --report"),
    ],
)
def test_bad_input_is_one_line_exit_2(capsys, tmp_path, nsk, argv, message):
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "empty.json").write_text(json.dumps({"meta": {}, "rows": []}))
    (tmp_path / "runs.json").write_text(json.dumps([{"model": "m", "ratio": 2.0, "top1_after": 0.5}]))
    code = main([a.format(tmp=tmp_path, nsk=nsk) for a in argv])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and err.count("\n") == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "r.html").exists()


def test_sensitivity_curves_follow_the_json(sensitivity_json):
    sens = read_sensitivity(sensitivity_json)
    layers = json.loads(sensitivity_json.read_text())["layers"]
    assert [(c.layer, c.axis) for c in sens.curves] == [
        (layer["name"], axis) for layer in layers for axis in ("bits", "sparsity")
    ]
    assert sens.curves[0].settings == (2.0, 4.0) and sens.curves[1].settings == (0.5, 0.9)


def browser() -> str:
    for name in BROWSERS:
        if shutil.which(name):
            return name
    pytest.skip(
        f"no headless browser: none of {', '.join(BROWSERS)} is on PATH "
        "(.ci/run installs the Debian package chromium; apt-get install -y chromium)"
    )


def test_page_renders_in_headless_chromium(nsk, full_extras, tmp_path):
    """Chromium loads the page offline, runs its check script and finds every image decoded."""
    page = write_html_report(file_report(nsk), tmp_path / "page.html", full_extras)
    proc = subprocess.run(
        [
            browser(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=10000",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    dom = proc.stdout
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert re.search(r'<body[^>]*data-images="ok"', dom), "some image did not decode (or the script did not run)"
    assert {plot_id: "plot" for plot_id in PLOT_IDS} == parse(dom).figures


def test_perplexity_reads_as_perplexity_and_is_not_plotted_as_accuracy(nsk, tmp_path):
    from netshrink.report.inputs import _accuracy

    extras = ReportExtras(evaluation={"metric": "perplexity", "dataset": "shakespeare", "before": 20.0, "after": 21.0})
    page = render_html(file_report(nsk), extras)
    assert "21.00" in page and "before 20.00, change +5.0 %" in page and "2100.00%" not in page
    assert _accuracy({"ratio": 4.0, "metric": "perplexity", "after": 21.0}) is None
    assert _accuracy({"ratio": 4.0, "metric": "top1", "after": 0.9}) == 0.9
