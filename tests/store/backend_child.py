"""One backend operation in a process of its own, for the contract suite's kill and race
tests: ``python -m tests.store.backend_child KIND LOCATION OPERATION NAME [ARG]``.

Operations:
  put-forever NAME SIZE      put NAME again and again, each time SIZE bytes of one value
  upload-and-wait NAME SIZE  write SIZE bytes into an upload of NAME, print "ready", then
                             wait on stdin (the test kills it before it completes)
  race NAME TOKEN            print "ready", wait for a line on stdin, then put_if_absent
                             NAME=TOKEN and print "won" or "lost"
"""

from __future__ import annotations

import sys

from .backend_fixtures import open_backend


def main(kind: str, location: str, operation: str, name: str, argument: str) -> None:
    backend = open_backend(kind, location)
    if operation == "put-forever":
        value = 0
        while True:
            value = (value + 1) % 256
            backend.put(name, bytes([value]) * int(argument))
    elif operation == "upload-and-wait":
        upload = backend.open_upload(name)
        upload.write(bytes(int(argument)))
        print("ready", flush=True)
        sys.stdin.readline()
    elif operation == "race":
        print("ready", flush=True)
        sys.stdin.readline()
        won = backend.put_if_absent(name, argument.encode())
        print("won" if won else "lost", flush=True)
    else:
        raise SystemExit(f"unknown operation {operation}")


if __name__ == "__main__":
    main(*sys.argv[1:])
