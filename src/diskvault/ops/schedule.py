"""The timers that run a series' backups unattended, as text: systemd service and timer
units, or crontab lines. Pure: a ``Schedule`` in, file names and contents out; nothing is
installed here (the admin copies the files and enables the timers, and sees what runs).

Under systemd the passphrase is a credential (``LoadCredential=`` for a root-only file,
``LoadCredentialEncrypted=`` for one sealed with ``systemd-creds``): systemd hands it to the
service in ``$CREDENTIALS_DIRECTORY`` (``%d``), which diskvault reads with
``--password-file``; it never sits in the environment. The service is sandboxed: a read-only
system but the repository, its state and cache folders and the metrics folder, no device but
a block-device source, no new privileges."""

from __future__ import annotations

import re
import shlex
import string
from dataclasses import dataclass, field
from pathlib import Path

from ..store.backends.location import parse_location

CREDENTIAL_NAME = "diskvault-passphrase"
DAYS = {"mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6, "sun": 0}  # cron's numbers
UNIT_NAME_CHARACTERS = frozenset(string.ascii_letters + string.digits + "_.")
KEEP_RULES = ("last", "hourly", "daily", "weekly", "monthly", "yearly")

# What the service may not do. Each line is one systemd option; all leave a backup of a file
# or device into a local folder or an object store working (tested: tests/ops/test_schedule).
HARDENING = """\
ProtectSystem=strict
ProtectHome=read-only
PrivateTmp=yes
NoNewPrivileges=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictSUIDSGID=yes
RestrictRealtime=yes
RestrictNamespaces=yes
LockPersonality=yes
SystemCallArchitectures=native
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
CapabilityBoundingSet=CAP_DAC_READ_SEARCH CAP_DAC_OVERRIDE CAP_FOWNER
UMask=0077
Nice=10
IOSchedulingClass=idle
"""


@dataclass(frozen=True)
class ClockTime:
    """A time of day, and for a weekly job a day (``mon``..``sun``)."""

    hour: int
    minute: int
    day: str | None = None

    def on_calendar(self) -> str:
        day = f"{self.day.capitalize()} " if self.day else ""
        return f"{day}*-*-* {self.hour:02d}:{self.minute:02d}:00"

    def cron(self) -> str:
        day = str(DAYS[self.day]) if self.day else "*"
        return f"{self.minute} {self.hour} * * {day}"


def parse_clock(text: str, weekly: bool = False) -> ClockTime:
    """'02:30' (daily) or 'sun 04:30' (weekly); ValueError with what is wanted otherwise."""
    pattern = r"(?:(mon|tue|wed|thu|fri|sat|sun) )?([01]?\d|2[0-3]):([0-5]\d)"
    found = re.fullmatch(pattern, text.strip().lower())
    if not found or bool(found.group(1)) != weekly:
        wanted = "a day and a time such as 'sun 04:30'" if weekly else "a time such as 02:30"
        raise ValueError(f"cannot read {text!r} as {wanted}")
    return ClockTime(int(found.group(2)), int(found.group(3)), found.group(1))


@dataclass(frozen=True)
class Schedule:
    """One series' nightly backup (then prune by ``keep``) and weekly check. Paths are
    absolute; ``passphrase_file`` and ``encrypted_credential`` are alternatives (neither:
    a plaintext repository)."""

    program: Path
    repository: str
    source: Path
    series: str
    backup_at: ClockTime
    check_at: ClockTime
    keep: dict[str, int] = field(default_factory=dict)
    read_data: bool = False
    passphrase_file: Path | None = None
    encrypted_credential: Path | None = None
    source_is_device: bool = False
    on_failure: str | None = None
    on_success: str | None = None
    metrics_dir: Path | None = None
    environment: dict[str, str] = field(default_factory=dict)

    def backup_arguments(self) -> list[str]:
        return ["backup", "--no-progress", "-r", self.repository, str(self.source),
                "--name", self.series]

    def prune_arguments(self) -> list[str] | None:
        rules = [f"--keep-{rule}={self.keep[rule]}" for rule in KEEP_RULES
                 if self.keep.get(rule)]
        return ["prune", "-r", self.repository, "--name", self.series, *rules] if rules \
            else None

    @property
    def repository_folder(self) -> Path | None:
        """The repository's folder, which the sandboxed service must be able to write;
        None for an object store."""
        return parse_location(self.repository).folder

    def check_arguments(self) -> list[str]:
        return ["check", "-r", self.repository] + (["--read-data"] if self.read_data else [])

    def hook_arguments(self) -> list[str]:
        arguments = []
        for option, value in (("--on-failure", self.on_failure),
                              ("--on-success", self.on_success),
                              ("--metrics-dir", self.metrics_dir)):
            if value:
                arguments += [option, str(value)]
        return arguments


def unit_prefix(series: str) -> str:
    """``diskvault-<series>``: what a unit name may not hold escaped byte by byte as
    ``\\xNN``, in systemd-escape's style."""
    escaped = "".join(chr(byte) if chr(byte) in UNIT_NAME_CHARACTERS else f"\\x{byte:02x}"
                      for byte in series.encode())
    return f"diskvault-{escaped}"


def _systemd_word(word: str) -> str:
    """One argument of ExecStart=: specifiers and variables kept literal, quoted if needed."""
    word = word.replace("%", "%%").replace("$", "$$")
    if word and not re.search(r"[\s\"'\\;]", word):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _description(text: str) -> str:
    """Description= expands specifiers: a % in a path is doubled; one line only."""
    return " ".join(text.split()).replace("%", "%%")


def _environment_line(name: str, value: str) -> str:
    """Environment= expands specifiers but not variables: only % is doubled."""
    assignment = f"{name}={value}".replace("%", "%%")
    return 'Environment="' + assignment.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _exec_line(program: Path, arguments: list[str], passphrase: str | None) -> str:
    words = [_systemd_word(str(program)), *map(_systemd_word, arguments)]
    if passphrase:
        words.append(f"--password-file={passphrase}")  # %d: systemd's credentials folder
    return "ExecStart=" + " ".join(words)


def _service(schedule: Schedule, description: str, commands: list[list[str]]) -> str:
    credential = None
    lines = ["[Unit]", f"Description={_description(description)}",
             "Wants=network-online.target", "After=network-online.target local-fs.target",
             "", "[Service]", "Type=oneshot"]
    if schedule.passphrase_file:
        lines.append(f"LoadCredential={CREDENTIAL_NAME}:{schedule.passphrase_file}")
        credential = f"%d/{CREDENTIAL_NAME}"
    elif schedule.encrypted_credential:
        lines.append(f"LoadCredentialEncrypted={CREDENTIAL_NAME}:"
                     f"{schedule.encrypted_credential}")
        credential = f"%d/{CREDENTIAL_NAME}"
    lines += [_exec_line(schedule.program, command + schedule.hook_arguments(), credential)
              for command in commands]
    # State and cache in /var/lib/diskvault and /var/cache/diskvault, made by systemd:
    # `XDG_STATE_HOME=/var/lib diskvault status` reads what these runs remembered.
    lines += ["StateDirectory=diskvault", "CacheDirectory=diskvault",
              "Environment=XDG_STATE_HOME=%S XDG_CACHE_HOME=%C"]
    lines += [_environment_line(name, value)
              for name, value in sorted(schedule.environment.items())]
    writable = [schedule.repository] if schedule.repository_folder else []
    writable += [str(schedule.metrics_dir)] if schedule.metrics_dir else []
    if writable:
        lines.append("ReadWritePaths=" + " ".join(map(_systemd_word, writable)))
    if schedule.source_is_device:
        lines += ["DevicePolicy=closed", f"DeviceAllow={_systemd_word(str(schedule.source))} r"]
    else:
        lines.append("PrivateDevices=yes")
    return "\n".join(lines) + "\n" + HARDENING


def _timer(description: str, when: ClockTime) -> str:
    return "\n".join(["[Unit]", f"Description={_description(description)}", "", "[Timer]",
                      f"OnCalendar={when.on_calendar()}", "RandomizedDelaySec=10min",
                      "Persistent=true", "", "[Install]", "WantedBy=timers.target", ""])


def systemd_units(schedule: Schedule) -> dict[str, str]:
    """File name -> content: a backup service and timer, a check service and timer."""
    prefix = unit_prefix(schedule.series)
    backup = [schedule.backup_arguments()]
    prune = schedule.prune_arguments()
    if prune:
        backup.append(prune)
    what = f"series {schedule.series} of {schedule.repository}"
    return {
        f"{prefix}-backup.service": _service(
            schedule, f"diskvault: back up {schedule.source} as {what}"
            + (" and prune it" if prune else ""), backup),
        f"{prefix}-backup.timer": _timer(f"diskvault: nightly backup of {what}",
                                         schedule.backup_at),
        f"{prefix}-check.service": _service(schedule, f"diskvault: check {schedule.repository}",
                                            [schedule.check_arguments()]),
        f"{prefix}-check.timer": _timer(f"diskvault: weekly check of {schedule.repository}",
                                        schedule.check_at),
    }


def _cron_command(schedule: Schedule, arguments: list[str]) -> str:
    words = [str(schedule.program), *arguments, *schedule.hook_arguments()]
    if schedule.passphrase_file:
        words.append(f"--password-file={schedule.passphrase_file}")
    assignments = [f"{name}={shlex.quote(value)}"
                   for name, value in sorted(schedule.environment.items())]
    return " ".join(assignments + [shlex.quote(word) for word in words]) + " >/dev/null"


def crontab_lines(schedule: Schedule) -> list[str]:
    """Lines for ``crontab -e``: full paths (cron's PATH is /usr/bin:/bin), standard output
    dropped (a nightly summary is not worth a mail; errors on standard error still are),
    and every % escaped, which cron would otherwise turn into a new line."""
    backup = _cron_command(schedule, schedule.backup_arguments())
    prune = schedule.prune_arguments()
    if prune:
        backup += " && " + _cron_command(schedule, prune)
    check = _cron_command(schedule, schedule.check_arguments())
    return [f"# diskvault: series {schedule.series} of {schedule.repository}",
            f"{schedule.backup_at.cron()} {backup}".replace("%", "\\%"),
            f"{schedule.check_at.cron()} {check}".replace("%", "\\%")]
