"""backup, prune and check remember how each run ended (ops/runs.py), then tell whoever asked:
``--on-success``/``--on-failure`` commands and a ``--metrics-dir`` for Prometheus. A
decorator adds the three options to a command and wraps its callback, so the commands
themselves only note their figures (``note_figures``). Nothing here can change a run's exit
code: a state folder or hook that fails is a warning."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import click

from ...errors import DiskvaultError
from ..common import REPO_KEY, REPOSITORY_ID_KEY
from .formatting import warn

FIGURES_KEY = "diskvault.run_figures"
EXIT_INTERRUPTED = 130

SeriesOf = Callable[[dict], "str | None"]


def note_figures(**figures) -> None:
    """A command's figures for its run record (a backup's bytes, a check's result)."""
    ctx = click.get_current_context()
    ctx.meta.setdefault(FIGURES_KEY, {}).update(figures)


def failure_of(error: BaseException) -> tuple[int, str]:
    """The exit code and one line the user sees for ``error`` (as cli/main.py prints it)."""
    if isinstance(error, DiskvaultError):
        return error.exit_code, str(error)
    if isinstance(error, click.ClickException):
        return error.exit_code, error.format_message()
    if isinstance(error, (KeyboardInterrupt, click.exceptions.Abort)):
        return EXIT_INTERRUPTED, "interrupted"
    if isinstance(error, OSError):
        where = f" ({error.filename})" if error.filename else ""
        return 1, f"{error.strerror or error}{where}"
    return 1, f"internal error: {type(error).__name__}: {error}"


def location_text(repo: str | None) -> str | None:
    """The repository as runs are filed under it when its id is unknown: a local folder as
    an absolute path, so ``-r vm1`` and ``-r /backups/vm1`` from /backups agree. None when
    ``repo`` names no repository at all (missing, or a URL diskvault does not know)."""
    from ...store.backends.location import parse_location
    try:
        location = parse_location(repo)
    except DiskvaultError:
        return None
    return location.absolute_text()


def _options() -> list[click.Option]:
    return [
        click.Option(["--on-success"], metavar="COMMAND", envvar="DISKVAULT_ON_SUCCESS",
                     help="Run COMMAND (no shell; DISKVAULT_* variables say what happened) "
                          "when this succeeds (or set DISKVAULT_ON_SUCCESS)."),
        click.Option(["--on-failure"], metavar="COMMAND", envvar="DISKVAULT_ON_FAILURE",
                     help="Run COMMAND when this fails (or set DISKVAULT_ON_FAILURE)."),
        click.Option(["--metrics-dir"], type=click.Path(path_type=Path, file_okay=False),
                     envvar="DISKVAULT_METRICS_DIR",
                     help="Write Prometheus figures into this folder (node_exporter's "
                          "textfile collector; or set DISKVAULT_METRICS_DIR)."),
    ]


def recorded(command_name: str, series_of: SeriesOf) -> Callable[[click.Command],
                                                                   click.Command]:
    """Record each run of the command (``series_of`` names its series from its parameters;
    None: the whole repository) and run its hooks and metrics."""
    def wrap(command: click.Command) -> click.Command:
        command.params.extend(_options())
        inner = command.callback

        @functools.wraps(inner)
        def callback(on_success, on_failure, metrics_dir, **params):
            started = datetime.now(timezone.utc)
            try:
                result = inner(**params)
            except (Exception, KeyboardInterrupt) as error:
                code, line = failure_of(error)
                if code != 0:
                    _finish(command_name, series_of(params), started, code, line,
                            on_failure, metrics_dir)
                raise
            _finish(command_name, series_of(params), started, 0, "", on_success, metrics_dir)
            return result

        command.callback = callback
        return command
    return wrap


def _finish(command_name: str, series: str | None, started: datetime, exit_code: int,
            error: str, hook: str | None, metrics_dir: Path | None) -> None:
    from ...ops.hooks import hook_environment, run_hook
    from ...ops.runs import Run, last_seen_id

    ctx = click.get_current_context()
    location = location_text(ctx.params.get("repo") or ctx.meta.get(REPO_KEY))
    opened_id = ctx.meta.get(REPOSITORY_ID_KEY)
    repository_id = opened_id or (last_seen_id(location) if location else None)
    run = Run(command_name, series, started, datetime.now(timezone.utc), exit_code, error,
              dict(ctx.meta.get(FIGURES_KEY, {})))
    if location is not None:  # else no status could ask for it: only the hook hears of it
        _remember(run, location, repository_id, opened_id is not None, metrics_dir)
    if hook:
        result = run_hook(hook, hook_environment(run, location or "", repository_id),
                          os.environ)
        if result.problem:
            warn(f"the {'success' if exit_code == 0 else 'failure'} hook failed: "
                 f"{result.problem}")


def _remember(run, location: str, repository_id: str | None, opened: bool,
              metrics_dir: Path | None) -> None:
    """File the run under the repository (and, if this run opened it, note its id at this
    location), then refresh its metrics file if asked."""
    from ...ops.metrics import render_metrics, write_metrics
    from ...ops.runs import load_runs, note_repository_id, record_run, repository_keys

    keys = repository_keys(location, repository_id)
    try:
        if opened:
            note_repository_id(location, repository_id)
        record_run(keys[0], run)
    except OSError as problem:
        warn(f"cannot remember this run in the state folder: {problem.strerror or problem} "
             f"({problem.filename}); 'diskvault status' will not know of it")
    except ValueError as problem:  # the run is done: its record must not turn it into a failure
        warn(f"cannot remember this run in the state folder: {problem}; 'diskvault status' "
             f"will not know of it")
    if metrics_dir is not None:
        try:
            write_metrics(metrics_dir, keys, render_metrics(load_runs(*keys), location))
        except OSError as problem:
            warn(f"cannot write the metrics into {metrics_dir}: "
                 f"{problem.strerror or problem}")
