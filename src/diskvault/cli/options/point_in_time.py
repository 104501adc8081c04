"""backup's options for reading a source at one instant (docs/point-in-time.md)."""

from __future__ import annotations

import functools

import click

from ...ops.hooks import HOOK_TIMEOUT_S
from ...sources.commands import ViewCommands
from ...sources.point_in_time import AUTO, METHODS, PointInTime, open_point_in_time


def point_in_time_options(command):
    """--snapshot, --snapshot-size, --pre-command, --post-command, --command-timeout."""
    for option in reversed([
            click.option("--snapshot", "view_method", type=click.Choice(METHODS), default=None,
                         help="How the source is held still while it is read: 'reflink' "
                              "(a clone of a file on XFS or btrfs), 'lvm' (an LVM snapshot "
                              "of a logical volume), 'none' (read in place; a change of a "
                              "file during the read fails the backup) or 'auto' (default: "
                              "reflink or lvm where the source allows, else in place)."),
            click.option("--snapshot-size", "lvm_size", default=None, metavar="SIZE",
                         help="Room for an LVM snapshot: lvcreate's --size (10G) or a % "
                              "(50%ORIGIN, 100%FREE); default 20%ORIGIN; none for a thin "
                              "volume."),
            click.option("--pre-command", default=None, metavar="CMD",
                         help="Run just before the point-in-time view is made (no shell; "
                              "'sh -c ...' for one)."),
            click.option("--post-command", default=None, metavar="CMD",
                         help="Run just after the view is made (after the read for a source "
                              "read in place), and on every way out once --pre-command ran."),
            click.option("--command-timeout", "command_timeout_s", default=HOOK_TIMEOUT_S,
                         type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
                         show_default=True,
                         help="How long --pre-command and --post-command may each run.")]):
        command = option(command)
    return command


def source_opener(from_stdin: bool, view_method, lvm_size, pre_command, post_command,
                  command_timeout_s: float):
    """What the facade's backup opens the source with, as the options ask; refused for
    standard input, which has no instant to choose."""
    if from_stdin and (view_method or lvm_size or pre_command or post_command):
        raise click.UsageError("--snapshot, --snapshot-size, --pre-command and "
                               "--post-command are for a file or block device, not standard "
                               "input: hold the producer still yourself")
    request = PointInTime(view_method or AUTO,
                          ViewCommands(pre_command, post_command, command_timeout_s), lvm_size)
    return functools.partial(open_point_in_time, request=request)
