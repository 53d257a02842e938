"""The dashboard and the report in Debian's headless Chromium (Playwright), over two real
in-process runs: the charts show the values of each run's rounds.csv."""

import base64
import json
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from fedsim.canaries.estimators import empirical_epsilon
from fedsim.records import RoundRecord
from fedsim.store import RunStore

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WHAT_IF = [
    {"noise_multiplier": z, "epsilon_theory": theory, "epsilon_empirical": estimate, "ci_low": estimate - 0.5}
    | {"ci_high": estimate + 0.5, "lower_bound": estimate / 2}
    for z, theory, estimate in ((0.5, 11.0, 9.0), (1.0, 4.8, 4.0), (2.0, 2.5, 2.0))
]
TRACES = """sel => Array.from(document.querySelector(sel).data || []).map(t => ({
    name: t.name, group: t.legendgroup, x: t.x, y: t.y}))"""


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        message = "Debian's chromium is not installed (.ci/run installs it: apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI must run the browser tests, not skip them
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield instance
        instance.close()


def _values(array) -> np.ndarray:
    """A plotly data array as the page holds it: a list, or typed-array base64."""
    if isinstance(array, dict) and "bdata" in array:
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=np.dtype(array["dtype"])).astype(float)
    return np.array([np.nan if value is None else value for value in array], dtype=float)


def _column(records, name):
    return np.array([np.nan if getattr(r, name) is None else getattr(r, name) for r in records], dtype=float)


def _trace(traces, run_id, name):
    (trace,) = [t for t in traces if t["group"] == run_id and t["name"] == name]
    return _values(trace["x"]), _values(trace["y"])


@pytest.fixture
def dashboard(tmp_path, audited_runs):
    """The dashboard over copies of the two runs, served on a free port of 127.0.0.1."""
    from fedsim.dashboard import create_app, make_server

    runs = tmp_path / "runs"
    for folder in audited_runs:
        shutil.copytree(folder, runs / folder.name)
    # what-if points as the audit writes them into a round's summary
    summary_path = RunStore.open(runs / audited_runs[0].name).audit_path(3).with_suffix(".json")
    summary = json.loads(summary_path.read_text())
    summary["what_if"] = WHAT_IF
    summary_path.write_text(json.dumps(summary))
    server = make_server(app=create_app(runs_dir=runs, refresh_s=0.5), host="127.0.0.1", port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield runs, f"http://127.0.0.1:{server.port}/"
    server.shutdown()
    thread.join(timeout=10)
    server.server_close()


def test_dashboard_charts_show_both_runs_values_and_follow_a_running_run(browser, dashboard, tmp_path):
    runs, url = dashboard
    stores = [RunStore.open(folder) for folder in sorted(runs.iterdir())]
    run_ids = [store.run_id for store in stores]
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(url)
    both = "ids => ids.every(id => document.querySelector('#epsilon-round .js-plotly-plot')?.data?.some(t => t.legendgroup === id))"
    page.wait_for_function(both, arg=run_ids, timeout=30_000)
    page.wait_for_function("() => document.querySelector('#score-histograms .js-plotly-plot')?.data?.length === 2")

    per_round = page.evaluate(TRACES, "#epsilon-round .js-plotly-plot")
    cumulative = page.evaluate(TRACES, "#epsilon-cumulative .js-plotly-plot")
    for store in stores:
        records = store.rounds()
        rounds = _column(records, "round")
        x, y = _trace(per_round, store.run_id, "theory (upper bound)")
        assert np.array_equal(x, rounds) and np.allclose(y, _column(records, "epsilon_round_theory"))
        x, y = _trace(per_round, store.run_id, "empirical estimate (canary audit)")
        assert np.array_equal(x, rounds) and np.allclose(y, _column(records, "epsilon_round_empirical"))
        _, y = _trace(per_round, store.run_id, "audit lower bound (threshold method)")
        assert np.allclose(y, _column(records, "epsilon_round_empirical_lower_bound"))
        _, y = _trace(cumulative, store.run_id, "theory (upper bound)")
        assert np.allclose(y, _column(records, "epsilon_cumulative_theory"))
        _, y = _trace(cumulative, store.run_id, "empirical, extrapolated (estimates composed)")
        assert np.allclose(y, _column(records, "epsilon_cumulative_empirical_extrapolated"))
    # drawn, not only held: both names in each chart's legend, lines in its plot area
    for chart in ("#epsilon-round", "#epsilon-cumulative"):
        legend = page.text_content(f"{chart} .legend")
        assert all(run_id in legend for run_id in run_ids)
        assert page.locator(f"{chart} .scatterlayer .trace path.js-line").count() >= 4
    # the chosen audited round (default: the first run's last): scores, threshold, what-if
    page.wait_for_function("() => document.querySelector('#what-if .js-plotly-plot')?.data?.length === 3")
    histogram = page.evaluate("() => document.querySelector('#score-histograms .js-plotly-plot').layout.shapes")
    arrays, summary = stores[0].read_audit(3)
    chosen = summary.get("threshold", {}).get("threshold")  # as the audit wrote it, or recomputed
    if chosen is None:
        chosen = empirical_epsilon(arrays["scores_with"], arrays["scores_without"], delta=1e-5).threshold
    assert histogram[0]["x0"] == pytest.approx(chosen)
    what_if = page.evaluate(TRACES, "#what-if .js-plotly-plot")
    assert [trace["name"] for trace in what_if] == [
        "theory (upper bound)",
        "empirical estimate, 95% CI",
        "audit lower bound (threshold method)",
    ]
    assert list(_values(what_if[0]["x"])) == [0.5, 1.0, 2.0] and list(_values(what_if[0]["y"])) == [11.0, 4.8, 2.5]
    assert list(_values(what_if[1]["y"])) == [9.0, 4.0, 2.0]
    table = page.text_content("#compare-table")
    assert all(run_id in table for run_id in run_ids) and table.count("completed") == 2
    page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)

    # a run that goes on: a new round on disk shows up by itself
    stores[0].append_round(RoundRecord(round=4, clients=5, epsilon_round_theory=1.25, epsilon_cumulative_theory=99.5))
    grown = """id => document.querySelector('#epsilon-cumulative .js-plotly-plot').data
        .some(t => t.legendgroup === id && t.name === 'theory (upper bound)' && (t.x.length === 4 || t.x.bdata && atob(t.x.bdata).length === 32))"""
    page.wait_for_function(grown, arg=run_ids[0], timeout=15_000)
    _, y = _trace(page.evaluate(TRACES, "#epsilon-cumulative .js-plotly-plot"), run_ids[0], "theory (upper bound)")
    assert y[-1] == 99.5

    # the filter by scenario field keeps the runs with that value
    page.click("#filter-field")
    page.keyboard.type("dp.noise_multiplier")
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.querySelector('#filter-field-value').textContent === 'dp.noise_multiplier'")
    page.click("#filter-values")
    page.locator(".dash-dropdown-options").get_by_text("1.5", exact=True).click()
    page.keyboard.press("Escape")
    only = "id => { const g = document.querySelector('#epsilon-round .js-plotly-plot').data; return g.length > 0 && g.every(t => t.legendgroup === id); }"
    page.wait_for_function(only, arg=run_ids[1], timeout=15_000)
    page.close()


def test_report_opens_offline_with_its_charts(browser, audited_runs, tmp_path):
    from fedsim.report import write_report

    out = write_report(audited_runs, out=tmp_path / "report.html")
    context = browser.new_context(offline=True, viewport={"width": 1300, "height": 900})
    blocked = []

    def only_files(route):
        if route.request.url.startswith("file:"):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    context.route("**/*", only_files)
    page = context.new_page()
    page.goto(out.resolve().as_uri())
    charts = """() => { const plots = [...document.querySelectorAll('.js-plotly-plot')];
        return plots.length >= 7 && plots.every(p => p.data && p.data.length > 0 && p.querySelector('.main-svg')); }"""
    page.wait_for_function(charts, timeout=30_000)
    assert blocked == []
    per_round = page.evaluate(TRACES, ".js-plotly-plot")  # the first chart: per-round epsilon
    for folder in audited_runs:
        store = RunStore.open(folder)
        _, y = _trace(per_round, store.run_id, "theory (upper bound)")
        assert np.allclose(y, _column(store.rounds(), "epsilon_round_theory"))
    page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    context.close()
