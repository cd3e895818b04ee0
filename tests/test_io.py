import json
import os
import stat

import numpy as np
import pytest

from pillar_rerank.exceptions import InputFileError, InvalidInputError
from pillar_rerank.io import (
    atomic_path,
    check_output_path,
    load_array,
    load_json,
    save_array,
    save_json,
    sha256_file,
)


def test_load_array_never_unpickles_and_names_the_file(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InvalidInputError, match="obj.npy\\): holds an object \\(pickled\\) array"):
        load_array(tmp_path / "obj.npy", name="sims")
    with pytest.raises(InputFileError, match="sims \\(.*missing.npy\\): file not found"):
        load_array(tmp_path / "missing.npy", name="sims")
    with pytest.raises(InputFileError, match="got a directory"):
        load_array(tmp_path, name="sims")
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(InvalidInputError, match="\\): not a valid .npy file \\(no NumPy header\\).$"):
        load_array(tmp_path / "junk.npy")
    np.save(tmp_path / "ok.npy", np.arange(1000, dtype=np.float32))
    data = (tmp_path / "ok.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidInputError, match="cut.npy"):
        load_array(tmp_path / "cut.npy")


def test_memory_map_is_read_only(tmp_path):
    np.save(tmp_path / "a.npy", np.ones((3, 3), dtype=np.float16))
    arr = load_array(tmp_path / "a.npy", mmap=True)
    assert isinstance(arr, np.memmap) and not arr.flags.writeable


def test_save_refuses_inputs_and_existing_files(tmp_path):
    inp = tmp_path / "in.npy"
    np.save(inp, np.zeros(2))
    with pytest.raises(InputFileError, match="refusing to write over the input file"):
        save_array(inp, np.ones(2), inputs=[inp], overwrite=True)
    out = save_array(tmp_path / "out.npy", np.ones(2))
    with pytest.raises(InputFileError, match="file exists; pass overwrite=True to replace it"):
        save_array(out, np.zeros(2))
    save_array(out, np.zeros(2), overwrite=True)
    assert np.load(out).tolist() == [0.0, 0.0]
    with pytest.raises(InputFileError, match="does not exist"):
        check_output_path(tmp_path / "no" / "x.json")


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "t.json"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_written_files_get_normal_permissions(tmp_path):
    out = save_json(tmp_path / "o.json", {"a": 1})
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~mask


def test_json_round_trip_with_numpy_values(tmp_path):
    out = save_json(tmp_path / "o.json", {"x": np.float32(1.5), "a": np.arange(2), "p": tmp_path})
    assert load_json(out) == {"x": 1.5, "a": [0, 1], "p": str(tmp_path)}
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(InvalidInputError, match="not valid JSON"):
        load_json(tmp_path / "bad.json")
    with pytest.raises(InputFileError, match="file not found"):
        load_json(tmp_path / "none.json")
    with pytest.raises(TypeError):
        save_json(tmp_path / "x.json", {"bad": object()})
    assert not (tmp_path / "x.json").exists()
    assert sha256_file(out) == __import__("hashlib").sha256(out.read_bytes()).hexdigest()
    assert json.loads(out.read_text())["x"] == 1.5


@pytest.mark.parametrize("loader", ["array", "npz", "json"])
def test_a_fifo_is_refused_before_opening_it(tmp_path, loader):
    """Opening a FIFO blocks until a writer appears: the file type is checked first (exit 3)."""
    import signal

    from pillar_rerank.io import load_npz

    fifo = tmp_path / "pipe.npy"
    os.mkfifo(fifo)

    def hang(signum, frame):
        raise TimeoutError("opened the FIFO: blocked waiting for a writer")

    old = signal.signal(signal.SIGALRM, hang)
    signal.alarm(5)
    load = {"array": lambda: load_array(fifo, name="sims"),
            "npz": lambda: load_npz(fifo, name="shard", required={"a"}, allowed={"a"}),
            "json": lambda: load_json(fifo, name="config")}[loader]
    try:
        with pytest.raises(InputFileError, match=r"pipe.npy\): not a regular file \(a FIFO"):
            load()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_a_device_is_refused(tmp_path):
    link = tmp_path / "zero.npy"
    link.symlink_to("/dev/zero")
    with pytest.raises(InputFileError, match="not a regular file \\(a character device"):
        load_array(link, name="sims")


def test_unreadable_json_is_an_io_error(tmp_path, monkeypatch):
    from pathlib import Path

    path = tmp_path / "c.json"
    path.write_text("{}")

    def denied(self, *a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_text", denied)
    with pytest.raises(InputFileError, match="c.json\\): cannot read the file \\(Permission denied\\)"):
        load_json(path, name="config")


@pytest.mark.parametrize("mmap", [False, True])
@pytest.mark.parametrize("dtype", [">f4", ">f8", ">f2", ">i8", ">i4", ">u2"])
def test_big_endian_files_are_accepted_and_converted(tmp_path, dtype, mmap):
    """Integer maps and float matrices alike: a non-native byte order is converted on load."""
    values = np.arange(12).reshape(3, 4).astype(dtype)
    np.save(tmp_path / "be.npy", values)
    arr = load_array(tmp_path / "be.npy", mmap=mmap)
    assert arr.dtype == np.dtype(dtype).newbyteorder("=") and arr.dtype.isnative
    assert np.array_equal(arr, values)
