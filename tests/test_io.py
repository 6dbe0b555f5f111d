"""One way to write an output: a regular file replaced whole, a link's target written and the link kept, a device or
a pipe written in place, a folder refused; folders replaced whole, through links, never dropping a folder."""

from __future__ import annotations

import os
import stat
import threading

import pytest

from cutlass_resnet._io import open_output, output_path, replace_folder, write_text


def test_a_regular_file_is_replaced_whole(tmp_path):
    path = tmp_path / "out.json"
    path.write_text("old")
    with pytest.raises(RuntimeError), output_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-way")
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]
    write_text(path, "new")
    assert path.read_text() == "new"


def test_a_link_s_target_is_written_and_the_link_kept(tmp_path):
    (tmp_path / "runs").mkdir()
    target = tmp_path / "runs" / "2026-12-06.json"
    target.write_text("old")
    link = tmp_path / "latest.json"
    link.symlink_to(target)
    write_text(link, "new")
    assert link.is_symlink() and os.readlink(link) == str(target) and target.read_text() == "new"
    with open_output(link) as f:
        f.write("streamed\n")
    assert link.is_symlink() and target.read_text() == "streamed\n"


@pytest.mark.parametrize("stream", [False, True])
def test_a_pipe_is_written_in_place(tmp_path, stream):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(open(fifo).read()), daemon=True)  # noqa: SIM115
    reader.start()
    if stream:
        with open_output(fifo) as f:
            f.write("a line\n")
    else:
        write_text(fifo, "a line\n")
    reader.join(timeout=30)
    assert received == ["a line\n"] and fifo.is_fifo()


def test_a_full_device_is_an_error_and_stays_a_device(tmp_path):
    """A device is written in place, and a write it refuses is an error (a /dev/full of our own, made with mknod:
    a wrong writer replaces only that one)."""
    full = tmp_path / "full"
    try:
        os.mknod(full, stat.S_IFCHR | 0o666, os.makedev(1, 7))
    except PermissionError:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip("mknod needs root here")
    with pytest.raises(OSError, match="No space left on device"):
        write_text(full, "x" * 100_000)
    assert full.is_char_device()


def test_a_folder_is_never_replaced_by_a_file(tmp_path):
    folder = tmp_path / "model.safetensors"
    folder.mkdir()
    (folder / "keep").write_text("mine")
    with pytest.raises(IsADirectoryError, match="is a folder"):
        write_text(folder, "weights")
    with (
        pytest.raises(IsADirectoryError, match="is a folder where a file is written"),
        replace_folder(tmp_path, ["model.safetensors"]) as new,
    ):
        (new / "model.safetensors").write_text("weights")
    assert (folder / "keep").read_text() == "mine"


def test_a_link_to_a_folder_has_its_target_replaced(tmp_path):
    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / "config.json").write_text("{}")
    link = tmp_path / "current"
    link.symlink_to(tmp_path / "v1")
    with replace_folder(link, ["config.json"]) as new:
        (new / "config.json").write_text('{"new": 1}')
    assert link.is_symlink() and (tmp_path / "v1" / "config.json").read_text() == '{"new": 1}'
