"""check, in passes over what one check has found (state.py): packs against the index,
--read-data, the manifests, then damage tied to snapshots; run.py runs them in order."""

from .report import CheckReport
from .run import check

__all__ = ["CheckReport", "check"]
