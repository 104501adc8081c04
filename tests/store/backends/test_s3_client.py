"""The S3 client's fixed start: botocore's client without boto3 and s3transfer, and no walk
over every service's model folder to find S3's (counted by the interpreter's own audit
events, in a fresh interpreter)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("botocore", reason="the S3 client needs botocore (pip install -e '.[test]')")

# Opens an S3 backend (no request is made) and reports the modules loaded and the folders
# of botocore's data listed meanwhile.
OPEN_AND_COUNT = """
import json, os, sys
listed = []
def audit(event, args):
    if event in ("os.listdir", "os.scandir") and args and "botocore/data" in str(args[0]):
        listed.append(str(args[0]))
sys.addaudithook(audit)
from diskvault.store.backends.s3 import open_s3_backend
backend = open_s3_backend("s3://some-bucket/prefix", {"DISKVAULT_S3_ENDPOINT": "http://127.0.0.1:9",
                          "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"})
print(json.dumps({"listed": listed, "modules": sorted(sys.modules)}))
"""


@pytest.fixture(scope="module")
def opened() -> dict:
    result = subprocess.run([sys.executable, "-c", OPEN_AND_COUNT], capture_output=True,
                            text=True, timeout=120, check=True)
    return json.loads(result.stdout)


def test_opening_an_s3_backend_imports_neither_boto3_nor_s3transfer(opened):
    loaded = {name.partition(".")[0] for name in opened["modules"]}
    assert "botocore" in loaded
    assert not loaded & {"boto3", "s3transfer"}


def test_making_the_client_lists_no_folder_of_other_services(opened):
    # botocore lists S3's own folder for its API versions; the walk over the ~400 service
    # folders to learn that S3 exists listed every one of them
    assert len(opened["listed"]) <= 4, opened["listed"]
