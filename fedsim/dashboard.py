"""``fedsim dashboard``: a Dash page over a folder of runs that refreshes by itself.

Reads only the run store, through ``fedsim.results``; the table comes from
``fedsim.compare`` and every chart from ``fedsim.figures``. Never imports Flower or torch.
Serves on 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import datetime as dt
import errno
import logging
import socket
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from dash import Dash, Input, Output, State, dcc, html
from dash.exceptions import PreventUpdate

from fedsim import figures
from fedsim.compare import COMPARE_COLUMNS, compare_table, format_cell
from fedsim.errors import FedsimError
from fedsim.results import SCENARIO_FIELDS, audited_rounds, find_runs, load_audit, load_runs, load_what_if

__all__ = ["LOCAL_HOSTS", "create_app", "make_server"]

LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

_GRAPH_CONFIG = {"displaylogo": False, "toImageButtonOptions": {"format": "png", "scale": 2}}
_STATUS_COLORS = {"completed": "#1a7f37", "running": "#0969da", "interrupted": "#9a6700", "failed": "#cf222e"}
_EXPLAINER = (
    "Theory: the accountant's upper bound on ε. Empirical estimate: what the canary audit measured in a round "
    "(Gaussian fit, with its 95% confidence band). Audit lower bound: what the threshold attack proves at "
    "its confidence level. Cumulative empirical: the per-round estimates composed over rounds, an "
    "extrapolation rather than a measurement."
)
_STYLE = {
    "page": {"fontFamily": "system-ui, -apple-system, Segoe UI, sans-serif", "margin": "0 auto", "maxWidth": "1400px"},
    "section": {"marginTop": "28px", "borderBottom": "1px solid #d0d7de", "paddingBottom": "4px"},
    "row": {"display": "flex", "gap": "16px", "flexWrap": "wrap", "alignItems": "flex-end"},
    "control": {"minWidth": "260px", "flex": "1"},
    "table": {"borderCollapse": "collapse", "fontSize": "13px", "width": "100%"},
    "cell": {"borderBottom": "1px solid #eaeef2", "padding": "4px 8px", "textAlign": "right", "whiteSpace": "nowrap"},
    "note": {"color": "#57606a", "fontSize": "13px"},
}


def _signature(runs_dir: Path) -> tuple:
    """What changes on disk when a run makes progress (cheap: stats only)."""
    try:
        folders = find_runs(runs_dir)
    except FedsimError:
        return ()
    stamp = []
    for folder in folders:
        for name in ("manifest.json", "rounds.csv"):
            try:
                stamp.append((str(folder), name, (folder / name).stat().st_mtime_ns))
            except OSError:
                stamp.append((str(folder), name, None))
    return tuple(stamp)


def _load(runs_dir: Path) -> pd.DataFrame:
    """Every run under ``runs_dir``; empty while it holds none."""
    try:
        return load_runs(runs_dir)
    except FedsimError:
        return pd.DataFrame(columns=["run_id", *SCENARIO_FIELDS, "round"])


def _filtered(runs: pd.DataFrame, *, field: str | None, values: list[str] | None) -> pd.DataFrame:
    if not field or not values or field not in runs:
        return runs
    return runs[runs[field].astype(str).isin(values)]


def _selected(runs: pd.DataFrame, chosen: list[str] | None) -> pd.DataFrame:
    if not chosen:
        return runs
    return runs[runs["run_id"].isin(chosen)]


def _table(table: pd.DataFrame) -> html.Table:
    """The compare table as HTML, rounds shown as done / planned, status coloured."""
    shown = [column for column in COMPARE_COLUMNS if column != "rounds_planned"]
    header = html.Tr(
        [
            html.Th(
                "rounds done / planned" if column == "rounds_done" else COMPARE_COLUMNS[column],
                style={
                    **_STYLE["cell"],
                    "textAlign": "left" if column == "run_id" else "right",
                    "whiteSpace": "normal",
                    "verticalAlign": "bottom",
                    "maxWidth": "150px",
                },
            )
            for column in shown
        ]
    )
    rows = []
    for _, row in table.iterrows():
        cells = []
        for column in shown:
            value = row[column]
            style = dict(_STYLE["cell"])
            if column == "run_id":
                style["textAlign"] = "left"
                text = str(value)
            elif column == "rounds_done":
                text = f"{format_cell(value)} / {format_cell(row['rounds_planned'])}"
            elif column == "status":
                style.update(color=_STATUS_COLORS.get(str(value), "#24292f"), fontWeight="600")
                text = format_cell(value)
            else:
                text = format_cell(value)
            cells.append(html.Td(text, style=style))
        rows.append(html.Tr(cells))
    return html.Table([html.Thead(header), html.Tbody(rows)], style=_STYLE["table"], id="compare-table")


def _graph(graph_id: str) -> dcc.Graph:
    return dcc.Graph(id=graph_id, config=_GRAPH_CONFIG, figure=_empty("loading…"))


def _empty(message: str) -> go.Figure:
    figure = go.Figure()
    figure.add_annotation(text=message, showarrow=False, font={"size": 14, "color": "#57606a"})
    figure.update_layout(
        template="plotly_white", height=160, xaxis={"visible": False}, yaxis={"visible": False}, margin={"t": 20}
    )
    return figure


def _keep_zoom(figure: go.Figure) -> go.Figure:
    figure.update_layout(uirevision="fedsim")  # a refresh keeps the user's zoom and hidden lines
    return figure


def create_app(*, runs_dir: Path, refresh_s: float = 3.0) -> Dash:
    """The dashboard over ``runs_dir`` (a folder of runs, or one run folder)."""
    runs_dir = Path(runs_dir)
    app = Dash(__name__, title="fedsim dashboard", update_title=None)
    app.layout = html.Div(
        style=_STYLE["page"],
        children=[
            html.H2("fedsim: privacy of federated runs"),
            html.Div(id="status-line", style=_STYLE["note"]),
            html.P(_EXPLAINER, style={**_STYLE["note"], "maxWidth": "1100px"}),
            dcc.Interval(id="tick", interval=int(refresh_s * 1000)),
            dcc.Store(id="signature"),
            html.Div(
                style=_STYLE["row"],
                children=[
                    html.Div(
                        style=_STYLE["control"],
                        children=[
                            html.Label("Filter by scenario field"),
                            dcc.Dropdown(
                                id="filter-field",
                                options=["status", *SCENARIO_FIELDS],
                                placeholder="e.g. dp.noise_multiplier",
                            ),
                        ],
                    ),
                    html.Div(
                        style=_STYLE["control"],
                        children=[
                            html.Label("…keep runs whose value is"),
                            dcc.Dropdown(id="filter-values", multi=True, placeholder="any value"),
                        ],
                    ),
                    html.Div(
                        style={**_STYLE["control"], "flex": "2"},
                        children=[
                            html.Label("Runs shown (none picked: every run that passes the filter)"),
                            dcc.Dropdown(id="run-select", multi=True, placeholder="all runs"),
                        ],
                    ),
                ],
            ),
            html.H3("Runs", style=_STYLE["section"]),
            html.Div(id="runs-table", style={"overflowX": "auto"}),
            html.H3("Privacy: theory against measurement", style=_STYLE["section"]),
            _graph("epsilon-round"),
            _graph("epsilon-cumulative"),
            html.H3("Utility", style=_STYLE["section"]),
            _graph("training"),
            _graph("privacy-utility"),
            html.H3("Clipping and canary", style=_STYLE["section"]),
            _graph("clipping"),
            html.H3("One audited round", style=_STYLE["section"]),
            html.Div(
                style=_STYLE["row"],
                children=[
                    html.Div(
                        style={**_STYLE["control"], "flex": "2"},
                        children=[html.Label("Run"), dcc.Dropdown(id="audit-run", clearable=False)],
                    ),
                    html.Div(
                        style=_STYLE["control"],
                        children=[html.Label("Audited round"), dcc.Dropdown(id="audit-round", clearable=False)],
                    ),
                ],
            ),
            _graph("score-histograms"),
            html.Div(id="what-if-note", style=_STYLE["note"]),
            _graph("what-if"),
        ],
    )

    @app.callback(Output("signature", "data"), Input("tick", "n_intervals"), State("signature", "data"))
    def watch(_tick, previous):
        """Cheap: stat the run folders; the page redraws only when something changed."""
        signature = repr(_signature(runs_dir))
        if signature == previous:
            raise PreventUpdate
        return signature

    @app.callback(
        Output("runs-table", "children"),
        Output("status-line", "children"),
        Output("filter-values", "options"),
        Output("run-select", "options"),
        Output("audit-run", "options"),
        Output("epsilon-round", "figure"),
        Output("epsilon-cumulative", "figure"),
        Output("training", "figure"),
        Output("privacy-utility", "figure"),
        Output("clipping", "figure"),
        Input("signature", "data"),
        Input("filter-field", "value"),
        Input("filter-values", "value"),
        Input("run-select", "value"),
    )
    def overview(_signature, field, values, chosen):
        runs = _load(runs_dir)
        now = dt.datetime.now().strftime("%H:%M:%S")
        if runs.empty:
            message = f"No runs in {runs_dir} yet: start one with `fedsim run SCENARIO --out {runs_dir}`."
            empty = _empty(message)
            return (html.P(message), f"{runs_dir} · read {now}", [], [], [], *[empty] * 5)
        value_options = sorted(runs[field].astype(str).unique().tolist()) if field and field in runs else []
        filtered = _filtered(runs, field=field, values=values)
        run_ids = list(dict.fromkeys(filtered["run_id"]))
        shown = _selected(filtered, [run for run in (chosen or []) if run in run_ids])
        table = compare_table(shown)
        statuses = compare_table(runs)["status"].value_counts()
        counts = ", ".join(f"{count} {status}" for status, count in statuses.items())
        status_line = (
            f"{runs_dir.resolve()} · {runs['run_id'].nunique()} runs ({counts}) · "
            f"{table.shape[0]} shown · checks for new rounds every {refresh_s:g} s · last redrawn {now}"
        )
        audited = [run for run in dict.fromkeys(shown["run_id"]) if _has_audits(shown, run)]
        return (
            _table(table),
            status_line,
            value_options,
            run_ids,
            audited,
            _keep_zoom(figures.epsilon_per_round(shown)),
            _keep_zoom(figures.epsilon_cumulative(shown)),
            _keep_zoom(figures.training(shown)),
            _keep_zoom(figures.privacy_utility(table)),
            _keep_zoom(figures.clipping(shown)),
        )

    @app.callback(
        Output("audit-run", "value"),
        Input("audit-run", "options"),
        State("audit-run", "value"),
    )
    def default_audit_run(options, current):
        if current in (options or []):
            raise PreventUpdate
        return options[0] if options else None

    @app.callback(
        Output("audit-round", "options"),
        Output("audit-round", "value"),
        Input("audit-run", "value"),
        Input("signature", "data"),
        State("audit-round", "value"),
    )
    def audit_rounds(run_id, _signature, current):
        path = _run_path(runs_dir, run_id)
        if path is None:
            return [], None
        rounds = audited_rounds(path)
        options = [{"label": f"round {r}", "value": r} for r in rounds]
        value = current if current in rounds else (rounds[-1] if rounds else None)
        return options, value

    @app.callback(
        Output("score-histograms", "figure"),
        Output("what-if", "figure"),
        Output("what-if", "style"),
        Output("what-if-note", "children"),
        Input("audit-run", "value"),
        Input("audit-round", "value"),
    )
    def audit_figures(run_id, round_number):
        path = _run_path(runs_dir, run_id)
        if path is None or round_number is None:
            message = "No audited round in the runs shown (turn the audit on with --set audit.enabled=true)."
            return _empty(message), _empty(""), {"display": "none"}, ""
        audit = load_audit(path, round_number=int(round_number))
        histogram = figures.score_histograms(
            scores_with=audit.scores_with,
            scores_without=audit.scores_without,
            threshold=audit.threshold,
            title=f"Canary scores of {run_id}, round {round_number}: with vs. without the canary client",
        )
        what_if = load_what_if(path)
        points = what_if[what_if["round"] == int(round_number)]
        if points.empty:
            note = (
                "No what-if noise levels in this round (scenario key audit.noise_multipliers "
                "replays each audited round at other noise multipliers)."
            )
            return histogram, _empty(""), {"display": "none"}, note
        curve = figures.what_if_curve(
            points,
            title=f"What if round {round_number} of {run_id} had used another noise multiplier",
            run_noise_multiplier=_as_number(audit.summary.get("noise_multiplier")),
        )
        return histogram, curve, {}, ""

    return app


def _as_number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _has_audits(runs: pd.DataFrame, run_id: str) -> bool:
    run = runs[runs["run_id"] == run_id]
    return bool(
        run["epsilon_round_empirical"].notna().any() or run["epsilon_round_empirical_lower_bound"].notna().any()
    )


def _run_path(runs_dir: Path, run_id: str | None) -> Path | None:
    if not run_id:
        return None
    try:
        for folder in find_runs(runs_dir):
            if folder.name == run_id:
                return folder
    except FedsimError:
        return None
    return None


def _check_address(host: str, port: int) -> None:
    """Fail with one line when ``host:port`` cannot be bound (werkzeug would print its own
    lines and exit instead)."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror:
        raise FedsimError(f"--host {host!r} is not an address of this machine; pass e.g. 127.0.0.1") from None
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will
        try:
            probe.bind((host, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise FedsimError(
                    f"port {port} on {host} is in use; pass another with --port (e.g. --port {port + 1})"
                ) from None
            raise FedsimError(
                f"cannot listen on {host}:{port} ({error.strerror}); pass another --host or --port"
            ) from None


def make_server(*, app: Dash, host: str = "127.0.0.1", port: int = 8050) -> Any:
    """A threaded WSGI server for ``app``, bound now (``port=0`` picks a free port):
    call ``serve_forever()`` on it, ``shutdown()`` from another thread to stop it."""
    from werkzeug.serving import make_server as werkzeug_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    _check_address(host, port)
    try:
        return werkzeug_server(host, port, app.server, threaded=True)
    except SystemExit:  # werkzeug reports a failed bind itself, then exits
        raise FedsimError(f"cannot listen on {host}:{port}; pass another --host or --port") from None
