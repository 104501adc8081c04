"""The server loop on its own (in this process, frames in memory): a client that breaks the
protocol gets errors, never a traceback on the channel or a name outside the folder; uploads
left open when the channel ends are aborted; an append-only upload never replaces a pack;
the command typed at a terminal says what it is for."""

from __future__ import annotations

import io
import os
import pty
import subprocess
import sys
from pathlib import Path

from diskvault.remote.server import RepositoryServer
from diskvault.store.backends.ssh_wire import (HEAD, MAGIC, WIRE_VERSION, read_frame,
                                               write_frame)

from ..cli.test_errors import assert_one_line_error


def serve(folder: Path, requests: list[tuple[dict, bytes]], append_only: bool = False,
          cut_after: bytes = b"") -> list[tuple[dict, bytes]]:
    """The replies of a server given ``requests`` (then ``cut_after``: a frame cut off)."""
    channel_in, channel_out = io.BytesIO(), io.BytesIO()
    for header, body in [({"op": "hello", "version": WIRE_VERSION}, b""), *requests]:
        write_frame(channel_in, header, body)
    channel_in.write(cut_after)
    channel_in.seek(0)
    RepositoryServer(folder, append_only, channel_in, channel_out).serve()
    channel_out.seek(0)
    replies = []
    while (frame := read_frame(channel_out)) is not None:
        replies.append(frame)
    return replies[1:]


def test_names_outside_the_folder_and_malformed_requests_are_errors(tmp_path):
    folder = tmp_path / "repo"
    folder.mkdir()
    (tmp_path / "secret").write_bytes(b"not the repository's")
    replies = serve(folder, [({"op": "get", "name": "../secret"}, b""),
                             ({"op": "put", "name": "packs/../../escaped"}, b"x"),
                             ({"op": "get", "name": 7}, b""),
                             ({"op": "get_range", "name": "config", "offset": -1,
                               "length": 5}, b""),
                             ({"op": "upload_write", "upload": 99}, b"x"),
                             ({"op": "no-such-operation"}, b""),
                             ({"op": "hello", "version": WIRE_VERSION}, b""),
                             ({"op": "stat", "name": "config"}, b"")])
    kinds = [reply.get("error") for reply, _ in replies]
    assert kinds == ["name", "name", "protocol", "protocol", "protocol", "protocol",
                     "protocol", None]
    assert replies[-1][0] == {"result": None}
    assert not (tmp_path / "escaped").exists() and list(folder.iterdir()) == []


def test_the_first_request_must_be_hello_and_a_missing_folder_is_named(tmp_path):
    channel_in, channel_out = io.BytesIO(), io.BytesIO()
    write_frame(channel_in, {"op": "list", "prefix": ""})
    write_frame(channel_in, {"op": "hello", "version": WIRE_VERSION})
    channel_in.seek(0)
    RepositoryServer(tmp_path / "absent", False, channel_in, channel_out).serve()
    channel_out.seek(0)
    first, second = read_frame(channel_out)[0], read_frame(channel_out)[0]
    assert first["error"] == "protocol"
    assert second["error"] == "diskvault" and second["class"] == "RepositoryNotFound"


def test_an_upload_left_open_or_cut_off_midway_leaves_no_temp_file(tmp_path):
    folder = tmp_path / "repo"
    folder.mkdir()
    cut = HEAD.pack(MAGIC, 40, 1000) + b'{"op":"upload_write"'  # the client died here
    replies = serve(folder, [({"op": "upload_open", "name": "packs/ab/one.pack"}, b""),
                             ({"op": "upload_write", "upload": 1}, b"x" * 1000)],
                    cut_after=cut)
    assert [reply for reply, _ in replies] == [{"result": 1}, {"result": None}]
    assert [path.name for path in folder.rglob("*") if path.is_file()] == []


def test_an_append_only_upload_never_replaces_an_existing_pack(tmp_path):
    folder = tmp_path / "repo"
    (folder / "packs" / "ab").mkdir(parents=True)
    (folder / "packs" / "ab" / "one.pack").write_bytes(b"the real pack")
    replies = serve(folder, [({"op": "upload_open", "name": "packs/ab/one.pack"}, b""),
                             ({"op": "upload_write", "upload": 1}, b"garbage"),
                             ({"op": "upload_complete", "upload": 1,
                               "name": "packs/ab/one.pack"}, b""),
                             ({"op": "upload_open", "name": "packs/ab/two.pack"}, b""),
                             ({"op": "upload_write", "upload": 2}, b"a new pack"),
                             ({"op": "upload_complete", "upload": 2}, b"")],
                    append_only=True)
    assert [reply.get("error") for reply, _ in replies] == [None, None, "append-only", None,
                                                            None, None]
    assert (folder / "packs" / "ab" / "one.pack").read_bytes() == b"the real pack"
    assert (folder / "packs" / "ab" / "two.pack").read_bytes() == b"a new pack"
    assert sorted(path.name for path in (folder / "packs" / "ab").iterdir()) == [
        "one.pack", "two.pack"]


def test_serve_repository_typed_at_a_terminal_says_what_it_is_for(tmp_path):
    controller, terminal = pty.openpty()
    try:
        result = subprocess.run([sys.executable, "-m", "diskvault", "serve-repository",
                                 str(tmp_path)], stdin=terminal, capture_output=True,
                                timeout=60)
    finally:
        os.close(controller)
        os.close(terminal)
    assert_one_line_error(result, 2, "ssh://USER@HOST/PATH")
