"""schedule systemd|cron: the units or crontab lines that back a series up every night,
prune it and check the repository every week (ops/schedule.py writes them)."""

from __future__ import annotations

import os
import shutil
import stat
import sys
from pathlib import Path

import click

from ...errors import BadInput
from ..common import REPO_KEY
from ..output.run_records import location_text

SECRET_PREFIX = "DISKVAULT_PASSWORD"


def _default_program() -> Path:
    """The diskvault next to this Python (the installed one), else the one on PATH."""
    beside = Path(sys.executable).parent / "diskvault"
    found = beside if beside.exists() else shutil.which("diskvault")
    if not found:
        raise BadInput("cannot find the diskvault command to run: give its full path with "
                       "--program")
    return Path(os.path.abspath(found))


def _clock(weekly: bool):
    def convert(_ctx, param, value):
        from ...ops.schedule import parse_clock
        try:
            return parse_clock(value, weekly)
        except ValueError as error:
            raise click.BadParameter(str(error), param=param) from None
    return convert


def _environment(_ctx, param, values) -> dict[str, str]:
    found = {}
    for value in values:
        name, equals, text = value.partition("=")
        if not equals or not name:
            raise click.BadParameter(f"{value!r} is not NAME=VALUE", param=param)
        if name.startswith(SECRET_PREFIX):
            raise click.BadParameter(f"{name} would put the passphrase in the unit or "
                                     f"crontab: use --passphrase-file", param=param)
        found[name] = text
    return found


def _schedule_options(command):
    options = [
        click.option("-r", "--repo", metavar="REPO", help="The repository (or set "
                     "DISKVAULT_REPO)."),
        click.argument("source", type=click.Path(path_type=Path)),
        click.option("--name", default=None, help="Series name (default: the source's "
                                                 "file name)."),
        click.option("--at", "backup_at", default="02:30", show_default=True,
                     callback=_clock(False), help="Time of the nightly backup (local time)."),
        click.option("--check-at", default="sun 04:30", show_default=True,
                     callback=_clock(True), help="Day and time of the weekly check."),
        click.option("--read-data", is_flag=True, help="Make the weekly check read every "
                                                       "stored byte."),
        click.option("--keep-daily", default=7, show_default=True,
                     type=click.IntRange(min=0), help="Prune after each backup, keeping N "
                                                      "daily snapshots (0: no such rule)."),
        click.option("--keep-weekly", default=4, show_default=True,
                     type=click.IntRange(min=0), help="... N weekly ones."),
        click.option("--keep-monthly", default=12, show_default=True,
                     type=click.IntRange(min=0), help="... N monthly ones."),
        click.option("--passphrase-file", type=click.Path(path_type=Path, dir_okay=False),
                     help="A root-only file whose first line is the passphrase (systemd: "
                          "loaded as a credential)."),
        click.option("--on-failure", metavar="COMMAND", help="Run COMMAND when a run "
                                                             "fails (see backup --help)."),
        click.option("--on-success", metavar="COMMAND", help="Run COMMAND when a run "
                                                             "succeeds."),
        click.option("--metrics-dir", type=click.Path(path_type=Path, file_okay=False),
                     help="Write Prometheus figures into this folder after every run."),
        click.option("--setenv", "environment", multiple=True, metavar="NAME=VALUE",
                     callback=_environment, help="Set a variable for the runs (e.g. "
                     "DISKVAULT_S3_ENDPOINT=https://...); repeatable."),
        click.option("--program", type=click.Path(path_type=Path, dir_okay=False),
                     help="The diskvault command to run (default: this one's full path)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _schedule(params: dict, encrypted_credential: Path | None = None):
    """The Schedule the options describe, all paths made absolute."""
    from ...ops.schedule import Schedule
    from ...store.backends.location import parse_location
    from ...store.format.snapshots import series_name
    ctx = click.get_current_context()
    repo = params.pop("repo") or ctx.meta.get(REPO_KEY)
    source = Path(os.path.abspath(params.pop("source")))
    keep = {rule: params.pop(f"keep_{rule}") for rule in ("daily", "weekly", "monthly")}
    program = params.pop("program") or _default_program()
    params["encrypted_credential"] = encrypted_credential
    absolute = {name: Path(os.path.abspath(params[name])) if params[name] else None
                for name in ("passphrase_file", "encrypted_credential", "metrics_dir")}
    try:
        is_device = stat.S_ISBLK(os.stat(source).st_mode)
    except OSError:
        is_device = False
    parse_location(repo)  # a missing or unknown repository: its one-line reason
    return Schedule(program=Path(os.path.abspath(program)), repository=location_text(repo),
                    source=source, series=series_name(source, params.pop("name")),
                    backup_at=params.pop("backup_at"), check_at=params.pop("check_at"),
                    keep=keep, read_data=params.pop("read_data"),
                    source_is_device=is_device,
                    on_failure=params.pop("on_failure"), on_success=params.pop("on_success"),
                    environment=params.pop("environment"), **absolute)


@click.group()
def schedule() -> None:
    """Print or write the systemd units or the crontab line that run a series' backups every night.

    Nothing is installed: copy the units to /etc/systemd/system and enable the timers, or
    paste the lines into root's crontab (docs/recipes.md)."""


@schedule.command()
@_schedule_options
@click.option("--encrypted-credential", type=click.Path(path_type=Path, dir_okay=False),
              help="The passphrase sealed with 'systemd-creds encrypt --name="
                   "diskvault-passphrase' (LoadCredentialEncrypted=), instead of "
                   "--passphrase-file.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False),
              help="Write the four unit files into this folder (e.g. /etc/systemd/system) "
                   "instead of printing them.")
def systemd(encrypted_credential, out_dir, **params) -> None:
    """Systemd service and timer units: nightly backup and prune, weekly check."""
    from ...ops.schedule import systemd_units
    if encrypted_credential and params["passphrase_file"]:
        raise click.UsageError("give --passphrase-file or --encrypted-credential, not both")
    units = systemd_units(_schedule(params, encrypted_credential))
    if out_dir is None:
        for name, text in units.items():
            click.echo(f"# {name}\n{text}")
        return
    _write_units(out_dir, units)
    timers = " ".join(name for name in units if name.endswith(".timer"))
    click.echo(f"wrote {', '.join(units)} into {out_dir}; then: systemctl daemon-reload && "
               f"systemctl enable --now {timers}")
    click.echo("the units keep their state in /var/lib/diskvault: read it with "
               "XDG_STATE_HOME=/var/lib diskvault status")


def _write_units(folder: Path, units: dict[str, str]) -> None:
    """Each unit file created new and private; if one exists, none is written (and a file
    that appears meanwhile still makes the exclusive create fail, never is overwritten)."""
    from ...store.host.durable import create_exclusive, open_folder, write_all
    with open_folder(folder) as folder_fd:
        for name in units:
            if os.path.lexists(folder / name):
                raise BadInput(f"{folder / name} exists: remove it first (systemctl disable "
                               f"the timer) or write elsewhere with --out")
        for name, text in units.items():
            with os.fdopen(create_exclusive(folder_fd, name), "wb") as file:
                write_all(file.fileno(), text.encode())
                os.fsync(file.fileno())


@schedule.command()
@_schedule_options
def cron(**params) -> None:
    """Crontab lines (for 'crontab -e' as root): nightly backup and prune, weekly check."""
    from ...ops.schedule import crontab_lines
    for line in crontab_lines(_schedule(params)):
        click.echo(line)
