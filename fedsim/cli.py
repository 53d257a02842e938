"""The ``fedsim`` command line (Typer)."""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import signal
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, get_args

import click
import typer
import typer.core

from fedsim.config import Sampling
from fedsim.errors import FedsimError


class _OneLineUsageErrors(typer.core.TyperGroup):
    """Usage mistakes (unknown option, bad choice, missing argument) as one line, exit code 2."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except click.exceptions.NoArgsIsHelpError as error:  # `fedsim`, `fedsim data`: the help
            error.show()
            sys.exit(error.exit_code)
        except click.ClickException as error:
            where = f" (see `{error.ctx.command_path} --help`)" if getattr(error, "ctx", None) else ""
            typer.echo(f"fedsim: error: {' '.join(error.format_message().split())}{where}", err=True)
            sys.exit(error.exit_code)
        except click.Abort:
            typer.echo("fedsim: aborted", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=_OneLineUsageErrors,
    no_args_is_help=True,
    add_completion=False,
    help="Federated-learning simulator that measures privacy.",
)
privacy_app = typer.Typer(no_args_is_help=True, help="Differential-privacy calculators.")
app.add_typer(privacy_app, name="privacy")
data_app = typer.Typer(no_args_is_help=True, help="Data sets: download, verify and prepare.")
app.add_typer(data_app, name="data")

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _fail(message: str, code: int = EXIT_USAGE) -> None:
    typer.echo(f"fedsim: error: {message}", err=True)
    raise typer.Exit(code)


def friendly(command):
    """Report fedsim errors as one line with exit code 2, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except FedsimError as error:
            _fail(str(error))

    return wrapper


def _quiet_interrupt(signum: int, frame: object) -> None:
    """Ctrl-C or SIGTERM: silence Flower before its worker threads report the stopped Ray
    actors, and stop the run (every round written so far stays on disk)."""
    from fedsim.runner import Interrupted

    logging.getLogger("flwr").setLevel(logging.CRITICAL + 1)
    raise Interrupted(signal.Signals(signum).name)


class EngineChoice(str, Enum):
    flower = "flower"
    inprocess = "inprocess"


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:.{digits}f}"
    return str(value)


class RunProgress:
    """The progress bar of one run (round, accuracy, theoretical epsilon and, when the
    audit is on, the empirical one beside it) and its closing summary."""

    def __init__(self, *, console, name: str, rounds: int, delta: float, audited: bool) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = console
        self.rounds = rounds
        self.delta = delta
        self.audited = audited
        self.last_audited = None
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("acc {task.fields[acc]}  {task.fields[eps]}"),
            TimeElapsedColumn(),
            console=console,
            disable=not console.is_terminal,
        )
        self.task = self.progress.add_task(f"{name} round", total=rounds, acc="-", eps=self._epsilon(None))

    def _epsilon(self, row) -> str:
        theory = f"ε theory {_fmt(row.epsilon_cumulative_theory, 2) if row else '-'}"
        if not self.audited:
            return theory
        empirical = _fmt(row.epsilon_cumulative_empirical_extrapolated, 2) if row else "-"
        if self.last_audited is None:
            return f"{theory}  empirical {empirical} (extrapolated)"
        audited = self.last_audited
        return (
            f"{theory}  empirical {empirical} (extrapolated; "
            f"round {audited.round} estimate {_fmt(audited.epsilon_round_empirical, 2)})"
        )

    def on_round(self, row) -> None:
        if row.epsilon_round_empirical is not None or row.epsilon_round_empirical_lower_bound is not None:
            self.last_audited = row
        self.progress.update(self.task, advance=1, acc=_fmt(row.eval_accuracy), eps=self._epsilon(row))
        if not self.console.is_terminal:
            self.console.print(
                f"round {row.round}/{self.rounds}  clients {row.clients}  "
                f"acc {_fmt(row.eval_accuracy)}  {self._epsilon(row)}",
                highlight=False,
                soft_wrap=True,
            )

    def summary(self, rows) -> list[str]:
        """The end-of-run lines."""
        last = rows[-1]
        lines = [
            f"done: {len(rows)} rounds, final accuracy {_fmt(last.eval_accuracy)}, "
            f"epsilon {_fmt(last.epsilon_cumulative_theory, 2)} at delta {self.delta:g} (theory, upper bound)"
        ]
        if self.audited:
            audited = self.last_audited
            line = (
                f"empirical epsilon {_fmt(last.epsilon_cumulative_empirical_extrapolated, 2)} "
                "(extrapolated from the per-round audit estimates)"
            )
            if audited is not None:
                line += (
                    f"; audited round {audited.round}: estimate {_fmt(audited.epsilon_round_empirical, 2)}, "
                    f"lower bound {_fmt(audited.epsilon_round_empirical_lower_bound, 2)}, "
                    f"theory {_fmt(audited.epsilon_round_theory, 2)}"
                )
            lines.append(line)
        return lines


@app.command()
@friendly
def run(
    scenario: Annotated[Path, typer.Argument(help="Scenario YAML file, e.g. scenarios/quickstart.yaml")],
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a scenario key: key=value (repeatable)")
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Parent folder of the run folders")] = Path("runs"),
    ray_address: Annotated[
        str | None, typer.Option("--ray-address", help="Attach to a running Ray cluster (HOST:PORT)")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", help="Show Flower and Ray logs")] = False,
    engine: Annotated[
        EngineChoice | None,
        typer.Option(
            "--engine", help="flower (Flower on Ray) or inprocess (same clients, no Flower/Ray: debugging, baselines)"
        ),
    ] = None,
) -> None:
    """Run a scenario: DP federated training on Flower + Ray, with per-round epsilon."""
    from fedsim.config import load_scenario
    from fedsim.runner import run_scenario

    resolved = load_scenario(scenario, overrides=set_ or [])
    _with_progress(
        name=resolved.name,
        rounds=resolved.rounds,
        delta=resolved.dp.delta,
        audited=resolved.audit.enabled,
        where=out,
        execute=lambda on_round, on_start: run_scenario(
            scenario=resolved,
            out_dir=out,
            ray_address=ray_address,
            verbose=verbose,
            on_round=on_round,
            on_start=on_start,
            engine=(engine or EngineChoice.flower).value,
        ),
    )


@app.command()
@friendly
def resume(
    run_folder: Annotated[Path, typer.Argument(help="The run folder to continue, e.g. runs/<run-id>")],
    ray_address: Annotated[
        str | None, typer.Option("--ray-address", help="Attach to a running Ray cluster (HOST:PORT)")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", help="Show Flower and Ray logs")] = False,
    engine: Annotated[EngineChoice | None, typer.Option("--engine", help="flower (default) or inprocess")] = None,
) -> None:
    """Continue an interrupted or failed run from its last checkpoint."""
    import yaml

    from fedsim.runner import resume_run
    from fedsim.store import RunStore

    store = RunStore.open(run_folder)
    if store.manifest()["status"] == "completed":
        typer.echo(f"run {store.run_id} is already completed; nothing to resume ({store.path})")
        return
    planned = yaml.safe_load((store.path / "scenario.yaml").read_text(encoding="utf-8"))
    _with_progress(
        name=store.run_id,
        rounds=int(planned["rounds"]),
        delta=float(planned["dp"]["delta"]),
        audited=bool(planned.get("audit", {}).get("enabled")),
        where=run_folder,
        execute=lambda on_round, on_start: resume_run(
            path=run_folder,
            ray_address=ray_address,
            verbose=verbose,
            on_round=on_round,
            on_start=on_start,
            engine=(engine or EngineChoice.flower).value,
        ),
    )


def _with_progress(*, name: str, rounds: int, delta: float, audited: bool, where: Path, execute) -> None:
    """Run ``execute(on_round, on_start)`` under a progress bar; Ctrl-C and SIGTERM stop it
    with every finished round kept (exit code 130)."""
    from rich.console import Console

    signal.signal(signal.SIGINT, _quiet_interrupt)
    signal.signal(signal.SIGTERM, _quiet_interrupt)
    console = Console(stderr=True)
    progress = RunProgress(console=console, name=name, rounds=rounds, delta=delta, audited=audited)
    started: dict[str, Any] = {}

    def on_start(store) -> None:
        started["store"] = store
        progress.progress.update(progress.task, completed=store.manifest()["rounds_completed"])
        console.print(f"run folder: {store.path}")

    try:
        with progress.progress:
            result = execute(progress.on_round, on_start)
    except KeyboardInterrupt:
        store = started.get("store")
        typer.echo(
            f"fedsim: interrupted; finished rounds are kept in {store.path if store else where}"
            + (f"; continue with `fedsim resume {store.path}`" if store else ""),
            err=True,
        )
        # Flower's server thread may be blocked waiting for replies that will never come;
        # every finished round is already on disk, so leave without waiting for it.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_INTERRUPTED)
    for line in progress.summary(result.rows):
        typer.echo(line)
    typer.echo(f"results: {result.store.path}  (rounds.csv, manifest.json, scenario.yaml)")


def _compare_output(table, *, as_csv: bool) -> None:
    """Print a compare table: rich for people, CSV (machine-readable names) with --csv."""
    if as_csv:
        typer.echo(table.to_csv(index=False, lineterminator="\n"), nl=False)
        return
    from rich.console import Console
    from rich.table import Table

    from fedsim.compare import COMPARE_COLUMNS, format_cell

    shown = [column for column in COMPARE_COLUMNS if column != "rounds_planned"]
    rows = []
    for _, row in table.iterrows():
        rows.append(
            [
                f"{format_cell(row[c])}/{format_cell(row['rounds_planned'])}"
                if c == "rounds_done"
                else format_cell(row[c])
                for c in shown
            ]
        )
    view = Table(title="fedsim runs: ε at each run's δ; theory is a bound, cumulative empirical an extrapolation")
    for i, column in enumerate(shown):
        label = "rounds done/ planned" if column == "rounds_done" else COMPARE_COLUMNS[column]
        widest = max([len(cells[i]) for cells in rows], default=1)
        view.add_column(
            label, justify="left" if column == "run_id" else "right", min_width=widest, max_width=max(widest, 14)
        )
    for cells in rows:
        view.add_row(*cells)
    console = Console()
    # values never fold (headers wrap); a pipe or file gets the whole width it needs
    Console(width=console.width if console.is_terminal else 400).print(view)


@app.command()
@friendly
def compare(
    runs: Annotated[
        list[Path], typer.Argument(help="Run folders, or folders of runs (searched recursively)", show_default=False)
    ],
    as_csv: Annotated[bool, typer.Option("--csv", help="Print CSV (machine-readable column names)")] = False,
) -> None:
    """Compare runs: one row per run with accuracy, theoretical and empirical epsilon."""
    from fedsim.compare import compare_table
    from fedsim.results import load_runs

    _compare_output(compare_table(load_runs(runs)), as_csv=as_csv)


@app.command()
@friendly
def sweep(
    scenario: Annotated[Path, typer.Argument(help="Scenario YAML file, e.g. scenarios/quickstart.yaml")],
    grid: Annotated[
        list[str],
        typer.Option("--grid", help="key=v1,v2,... : one run per combination of values (repeatable)"),
    ],
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a scenario key in every run: key=value (repeatable)")
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Parent folder of the sweep's run folders")] = Path("runs"),
    ray_address: Annotated[
        str | None, typer.Option("--ray-address", help="Attach to a running Ray cluster (HOST:PORT)")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", help="Show Flower and Ray logs")] = False,
    engine: Annotated[
        EngineChoice | None, typer.Option("--engine", help="flower (Flower on Ray, default) or inprocess")
    ] = None,
) -> None:
    """Run a scenario once per combination of --grid values, one run folder each.

    Folders are named after their overrides (OUT/NAME__key=value__...). Running the same
    sweep again skips completed combinations and resumes interrupted or failed ones from
    their checkpoints; nothing is deleted. Ends with the compare table.
    """
    from rich.console import Console

    from fedsim.compare import compare_table
    from fedsim.results import load_runs
    from fedsim.sweep import plan_sweep, run_sweep

    plan = plan_sweep(scenario_path=scenario, grid=grid, overrides=set_ or [])
    signal.signal(signal.SIGINT, _quiet_interrupt)
    signal.signal(signal.SIGTERM, _quiet_interrupt)
    console = Console(stderr=True)
    current: dict[str, Any] = {}
    position = {run.name: i for i, run in enumerate(plan, start=1)}

    def on_event(kind: str, run, folder: Path, detail: str) -> None:
        where = f"[{position[run.name]}/{len(plan)}] {run.name}"
        if kind == "skip":
            console.print(f"{where}: completed earlier, skipped", highlight=False, soft_wrap=True)
        elif kind == "moved":
            console.print(f"{where}: unfinished folder moved aside to {detail}", highlight=False, soft_wrap=True)
        elif kind in ("start", "resume"):
            what = "running" if kind == "start" else f"resuming the {detail} run from its last checkpoint"
            console.print(f"{where}: {what}", highlight=False, soft_wrap=True)
            current["progress"] = RunProgress(
                console=console,
                name=run.name,
                rounds=run.scenario.rounds,
                delta=run.scenario.dp.delta,
                audited=run.scenario.audit.enabled,
            )
            current["progress"].progress.start()
        elif kind in ("done", "failed"):
            current["progress"].progress.stop()
            if kind == "failed":
                console.print(f"{where}: failed: {detail}", highlight=False, soft_wrap=True)

    def on_round(row) -> None:
        current["progress"].on_round(row)

    try:
        results = run_sweep(
            plan=plan,
            out=out,
            engine=(engine or EngineChoice.flower).value,
            ray_address=ray_address,
            verbose=verbose,
            on_event=on_event,
            on_round=on_round,
        )
    except KeyboardInterrupt:
        if "progress" in current:
            current["progress"].progress.stop()
        typer.echo(
            f"fedsim: sweep interrupted; completed runs are kept in {out}: run the same command again to finish it",
            err=True,
        )
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_INTERRUPTED)
    _compare_output(compare_table(load_runs([folder for _, folder, _ in results])), as_csv=False)
    failed = [run.name for run, _, outcome in results if outcome == "failed"]
    if failed:
        typer.echo(f"fedsim: {len(failed)} of {len(results)} runs failed: {', '.join(failed)}", err=True)
        raise typer.Exit(1)


@app.command()
@friendly
def dashboard(
    runs_dir: Annotated[Path, typer.Argument(help="Folder of run folders (e.g. runs/), or one run folder")],
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on (only this machine by default)")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on")] = 8050,
) -> None:
    """Serve the privacy dashboard of a folder of runs (refreshes by itself while runs go on)."""
    if not runs_dir.is_dir():
        raise FedsimError(
            f"runs folder {str(runs_dir)!r} not found; pass the --out folder of `fedsim run` (default runs/)"
        )
    if not 0 <= port <= 65535:
        raise FedsimError(f"--port {port} is not a port number; pass 1-65535 (default 8050)")
    from fedsim.dashboard import LOCAL_HOSTS, create_app, make_server

    if host not in LOCAL_HOSTS:
        typer.echo(
            f"fedsim: warning: listening on {host}, not 127.0.0.1: anyone who can reach this machine "
            f"on port {port} can read these runs",
            err=True,
        )
    server = make_server(app=create_app(runs_dir=runs_dir), host=host, port=port)
    shown = f"[{host}]" if ":" in host else host
    typer.echo(f"dashboard of {runs_dir} at http://{shown}:{server.port}/  (Ctrl-C stops it)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@app.command()
@friendly
def report(
    runs: Annotated[
        list[Path], typer.Argument(help="Run folders, or folders of runs (searched recursively)", show_default=False)
    ],
    output: Annotated[Path, typer.Option("-o", "--output", help="HTML file to write")] = Path("report.html"),
) -> None:
    """Write the dashboard's figures and the compare table into one self-contained HTML file."""
    from fedsim.report import write_report

    path = write_report(runs, out=output)
    typer.echo(f"report: {path}  (opens offline in any browser)")


class AccountantChoice(str, Enum):
    pld = "pld"
    rdp = "rdp"


# the scenario's sampling values, as a Typer choice
SamplingChoice = Enum("SamplingChoice", {value: value for value in get_args(Sampling)}, type=str)
DEFAULT_SAMPLING = SamplingChoice("poisson")


@privacy_app.command("epsilon")
@friendly
def privacy_epsilon(
    sampling_rate: Annotated[
        float,
        typer.Option("--sampling-rate", min=0, max=1, help="q = clients per round / population"),
    ],
    rounds: Annotated[int, typer.Option("--rounds", min=1, help="Number of rounds (compositions)")],
    noise_multiplier: Annotated[
        float | None, typer.Option("--noise-multiplier", min=0, help="Noise multiplier z")
    ] = None,
    target_epsilon: Annotated[
        float | None, typer.Option("--target-epsilon", min=0, help="Print the z that reaches this epsilon")
    ] = None,
    delta: Annotated[float, typer.Option("--delta", min=0, max=1)] = 1e-5,
    accountant: Annotated[
        AccountantChoice | None, typer.Option("--accountant", help="pld (default for poisson) or rdp")
    ] = None,
    sampling: Annotated[SamplingChoice, typer.Option("--sampling")] = DEFAULT_SAMPLING,
    population: Annotated[
        int | None, typer.Option("--population", min=1, help="Population size (needed for --sampling fixed)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object")] = False,
) -> None:
    """Epsilon of DP-FedAvg (or the noise multiplier for a target epsilon)."""
    from fedsim.privacy import cumulative_epsilon, noise_multiplier_for_epsilon

    if (noise_multiplier is None) == (target_epsilon is None):
        raise FedsimError("give exactly one of --noise-multiplier and --target-epsilon")
    if accountant is None:
        accountant = AccountantChoice.pld if sampling.value == "poisson" else AccountantChoice.rdp
    if sampling.value == "fixed" and population is None:
        raise FedsimError("--sampling fixed needs --population N (the number of clients)")
    common = dict(
        sampling_rate=sampling_rate,
        rounds=rounds,
        delta=delta,
        sampling=sampling.value,
        population=population,
        accountant=accountant.value,
    )
    result: dict[str, Any] = {k: v for k, v in common.items() if v is not None}
    if target_epsilon is not None:
        z = noise_multiplier_for_epsilon(target_epsilon=target_epsilon, **common)
        result.update(
            noise_multiplier=z, epsilon=cumulative_epsilon(noise_multiplier=z, **common), target_epsilon=target_epsilon
        )
        text = f"noise multiplier {z:.4f} gives epsilon {result['epsilon']:.4f} at delta {delta:g} ({accountant.value})"
    else:
        eps = cumulative_epsilon(noise_multiplier=noise_multiplier, **common)
        result.update(noise_multiplier=noise_multiplier, epsilon=eps)
        text = f"epsilon {eps:.4f} at delta {delta:g} ({accountant.value}, {sampling.value} sampling)"
    typer.echo(json.dumps(result) if as_json else text)


class DataName(str, Enum):
    sent140 = "sent140"
    shakespeare = "shakespeare"
    celeba = "celeba"
    cifar10 = "cifar10"


@data_app.command("prepare")
@friendly
def data_prepare(
    name: Annotated[DataName, typer.Argument(help="Data set to prepare")],
    root: Annotated[Path | None, typer.Option("--root", help="Data folder (default: data/NAME)")] = None,
    url: Annotated[
        str | None,
        typer.Option("--url", help="Download from here instead of the official source (or FEDSIM_<NAME>_URL)"),
    ] = None,
    sha256: Annotated[
        str | None, typer.Option("--sha256", help="Expected sha256 of the download (or FEDSIM_<NAME>_SHA256)")
    ] = None,
    download: Annotated[bool, typer.Option("--download/--no-download", help="Download missing raw files")] = True,
    force: Annotated[bool, typer.Option("--force", help="Prepare again even if up to date")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object")] = False,
) -> None:
    """Download (where the terms allow), verify sha256 and convert a data set once.

    CelebA cannot be downloaded: place img_align_celeba/ (unzipped), identity_CelebA.txt and
    list_attr_celeba.txt in the root by hand.
    """
    from fedsim.data.prepare import prepare_dataset

    folder = root if root is not None else Path("data") / name.value
    summary = prepare_dataset(name.value, root=folder, url=url, sha256=sha256, download_missing=download, force=force)
    if as_json:
        typer.echo(json.dumps(summary))
        return
    if summary.get("downloaded"):
        typer.echo(f"downloaded {summary['file']} (sha256 {summary['sha256']})")
    typer.echo(f"{name.value}: prepared {summary['users']} users, {summary['rows']} rows in {summary['prepared']}")


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("fedsim: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)


if __name__ == "__main__":
    main()
