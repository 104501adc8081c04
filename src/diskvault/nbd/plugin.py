"""The nbdkit Python plugin that ``diskvault serve`` starts nbdkit with (``nbdkit python
plugin.py repo=... snapshot=... [keys-fd=N] python=X.Y [debug=1]``).

nbdkit embeds the system's python3; ``serve`` hands it its own sys.path in PYTHONPATH, so
this script imports diskvault and its libraries from the same installation. Every read goes
through SnapshotExport: a chunk that fails its check is an I/O error to the client.
"""

import errno
import logging
import sys

import nbdkit

API_VERSION = 2  # pread fills nbdkit's buffer in place

_settings: dict[str, str] = {}
_export = None


def thread_model():
    return nbdkit.THREAD_MODEL_PARALLEL  # the ImageReader is thread-safe


def config(key, value):
    if key not in ("repo", "snapshot", "keys-fd", "python", "debug"):
        raise ValueError(f"unknown parameter {key}={value}")
    _settings[key] = value


def config_complete():
    missing = [key for key in ("repo", "snapshot", "python") if key not in _settings]
    if missing:
        raise ValueError(f"missing parameter(s): {', '.join(missing)}")
    running = f"{sys.version_info.major}.{sys.version_info.minor}"
    if running != _settings["python"]:
        raise RuntimeError(f"nbdkit's Python plugin runs Python {running}, but diskvault is "
                           f"installed for Python {_settings['python']}: install diskvault "
                           f"with the system's python3 (scripts/setup.sh)")
    if _settings.get("debug") != "1":
        sys.tracebacklimit = 0  # a failure is one line on stderr, as in the CLI


def get_ready():
    global _export
    from diskvault.hardening import forbid_core_dumps
    from diskvault.nbd.export import SnapshotExport, read_keys

    forbid_core_dumps()  # this process holds the repository's key
    logging.basicConfig(level=logging.WARNING, format="diskvault serve: warning: %(message)s")
    keys = read_keys(int(_settings["keys-fd"])) if "keys-fd" in _settings else None
    _export = SnapshotExport(_settings["repo"], _settings["snapshot"], keys)


def unload():
    if _export is not None:
        _export.close()


def open(readonly):
    return _export  # one export, shared by every connection


def get_size(export):
    return export.size


def can_multi_conn(export):
    return True  # read-only: every connection sees the same bytes


def can_extents(export):
    return True


def can_cache(export):
    return nbdkit.CACHE_EMULATE


def extents(export, count, offset, flags):
    zero = nbdkit.EXTENT_HOLE | nbdkit.EXTENT_ZERO
    return [(start, length, zero if is_zero else 0)
            for start, length, is_zero in _failing_as_eio(export.extents, offset, count)]


def pread(export, buffer, offset, flags):
    data = _failing_as_eio(export.read, offset, len(buffer))
    if len(data) != len(buffer):
        nbdkit.set_error(errno.EIO)
        raise OSError(errno.EIO, f"short read at offset {offset}")
    buffer[:] = data


def _failing_as_eio(call, *args):
    """The call's result; its failure (damage, a vanished pack) goes to the client as EIO."""
    try:
        return call(*args)
    except BaseException:
        nbdkit.set_error(errno.EIO)
        raise
