"""The index is the only owner of LMDB: no module outside store/index/ imports it, so no
LMDB transaction or handle crosses into maintenance, the flows, the CLI or the mount."""

from __future__ import annotations

import ast
from pathlib import Path

import diskvault

PACKAGE = Path(diskvault.__file__).parent
OWNER = PACKAGE / "store" / "index"


def _imports_lmdb(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "lmdb"
                                                for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "lmdb":
            return True
    return False


def test_only_the_index_imports_lmdb():
    outside = [str(path.relative_to(PACKAGE)) for path in sorted(PACKAGE.rglob("*.py"))
               if OWNER not in path.parents and _imports_lmdb(path)]
    assert outside == []
    assert _imports_lmdb(OWNER / "chunk_index.py")  # the check does see an import
