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
    actors, and stop the run (every finished round is already on disk)."""
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


def _with_progress(*, name: str, rounds: int, delta: float, where: Path, execute) -> None:
    """Run ``execute(on_round, on_start)`` under a progress bar; Ctrl-C and SIGTERM stop it
    with every finished round kept (exit code 130)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    signal.signal(signal.SIGINT, _quiet_interrupt)
    signal.signal(signal.SIGTERM, _quiet_interrupt)
    console = Console(stderr=True)
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("acc {task.fields[acc]}  eps {task.fields[eps]}"),
        TimeElapsedColumn(),
        console=console,
        disable=not console.is_terminal,
    )
    task = progress.add_task(f"{name} round", total=rounds, acc="-", eps="-")
    started: dict[str, Any] = {}

    def on_start(store) -> None:
        started["store"] = store
        progress.update(task, completed=store.manifest()["rounds_completed"])
        console.print(f"run folder: {store.path}")

    def on_round(row) -> None:
        progress.update(task, advance=1, acc=_fmt(row.eval_accuracy), eps=_fmt(row.epsilon_cumulative_theory, 2))
        if not console.is_terminal:
            console.print(
                f"round {row.round}/{rounds}  clients {row.clients}  "
                f"acc {_fmt(row.eval_accuracy)}  eps {_fmt(row.epsilon_cumulative_theory, 2)}"
            )

    try:
        with progress:
            result = execute(on_round, on_start)
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
    last = result.rows[-1]
    typer.echo(
        f"done: {len(result.rows)} rounds, final accuracy {_fmt(last.eval_accuracy)}, "
        f"epsilon {_fmt(last.epsilon_cumulative_theory, 2)} at delta {delta:g}"
    )
    typer.echo(f"results: {result.store.path}  (rounds.csv, manifest.json, scenario.yaml)")


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
