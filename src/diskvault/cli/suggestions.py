"""What to say for a command diskvault does not have: the closest of its own names, or,
for the names borg and restic users type by habit, the diskvault command that does it."""

from __future__ import annotations

import difflib

# Another tool's command -> what does that here.
HABITS = {
    "snapshots": "list",                       # restic
    "rlist": "list",                           # borg 2
    "rinfo": "info",                           # borg 2
    "forget": "delete (named snapshots) or prune (--keep-* rules)",  # restic
    "create": "backup",                        # borg
    "extract": "restore (the whole image) or pull (files inside it)",  # borg
    "dump": "cat (the image) or pull (files inside it)",  # restic
    "rcreate": "init",                         # borg 2
    "repo-create": "init",                     # borg 2
    "generate": "completion",                  # restic's --bash-completion etc.
}


def suggestion(name: str, commands: list[str]) -> str:
    """The hint after "No such command NAME." ('' when nothing is close)."""
    if name in HABITS:
        return f"diskvault calls it {HABITS[name]}."
    close = difflib.get_close_matches(name, commands, n=2, cutoff=0.6)
    if close:
        return f"Did you mean {' or '.join(close)}?"
    return "'diskvault --help' lists the commands."
