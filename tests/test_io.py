"""mb.io.save / mb.io.load: round trips, key order, dtypes, and every way a file can
fail to be a checkpoint, including files that would need unpickling."""

import io
import pickle
import zipfile

import numpy as np
import pytest

import minibam as mb
from minibam import io as mbio

UNPICKLED = []


class _Tripwire:
    """Unpickling this records the fact: a loader that unpickles would trip it."""

    def __reduce__(self):
        return (UNPICKLED.append, ("unpickled!",))


def _state():
    rng = np.random.default_rng(0)
    # Deliberately not in sorted order, with names np.savez would choke on.
    return {
        "spatial_att.gate_s.gate_s_conv_final.weight": rng.standard_normal((1, 4, 1, 1)),
        "channel_att.gate_c.gate_c_bn_1.num_batches_tracked": np.array(7, dtype=np.int64),
        "b.float32": rng.standard_normal((3,)).astype(np.float32),
        "a.empty": np.zeros((0, 2)),
        "file": np.array([1.5, 2.5]),
        "allow_pickle": np.arange(6, dtype=np.int32).reshape(2, 3),
        "z/with slash": np.array([True, False]),
    }


def test_round_trip_keeps_values_dtypes_shapes_and_order(tmp_path):
    state = _state()
    path = tmp_path / "ckpt.npz"
    assert mbio.save(state, path) is None
    loaded = mbio.load(path)
    assert type(loaded) is dict
    assert list(loaded) == list(state)
    for key, value in state.items():
        assert isinstance(loaded[key], np.ndarray)
        assert loaded[key].dtype == value.dtype, key
        assert loaded[key].shape == value.shape, key
        np.testing.assert_array_equal(loaded[key], value)


def test_written_to_exactly_the_given_path_and_readable_by_numpy(tmp_path):
    path = tmp_path / "no_extension"
    mbio.save({"w": np.ones(2)}, str(path))
    assert path.exists() and not (tmp_path / "no_extension.npz").exists()
    with np.load(path, allow_pickle=False) as npz:
        assert npz.files == [mbio.MARKER, "w"]
        np.testing.assert_array_equal(npz["w"], np.ones(2))


def test_tensor_values_and_file_objects(tmp_path):
    t = mb.Tensor(np.arange(3.0), requires_grad=True)
    buffer = io.BytesIO()
    mbio.save({"t": t, "n": np.float32(2.0), "lst": [1, 2]}, buffer)
    buffer.seek(0)
    loaded = mbio.load(buffer)
    np.testing.assert_array_equal(loaded["t"], [0.0, 1.0, 2.0])
    assert loaded["n"].dtype == np.float32 and loaded["n"].shape == ()
    np.testing.assert_array_equal(loaded["lst"], [1, 2])
    # The loaded array is a copy, not the tensor's storage.
    loaded["t"][0] = 99.0
    assert t.data[0] == 0.0


def test_empty_state_dict(tmp_path):
    mbio.save({}, tmp_path / "e.npz")
    assert mbio.load(tmp_path / "e.npz") == {}


def test_save_errors(tmp_path):
    path = tmp_path / "x.npz"
    with pytest.raises(TypeError, match="must be a dict.*list"):
        mbio.save([("w", np.ones(2))], path)
    with pytest.raises(TypeError, match="keys must be str"):
        mbio.save({1: np.ones(2)}, path)
    with pytest.raises(ValueError, match="reserved"):
        mbio.save({mbio.MARKER: np.ones(2)}, path)
    with pytest.raises(TypeError, match=r"state_dict\['o'\].*object"):
        mbio.save({"o": np.array([{"a": 1}], dtype=object)}, path)
    assert not path.exists()


def test_load_refuses_pickled_object_array(tmp_path):
    path = tmp_path / "evil.npz"
    # np.savez pickles object arrays; the marker is there, so only the pickle check stops it.
    np.savez(path, **{mbio.MARKER: np.array(1), "w": np.array([_Tripwire()], dtype=object)})
    with pytest.raises(ValueError, match="pickled Python objects.*allow_pickle=False"):
        mbio.load(path)
    assert UNPICKLED == []


def test_load_refuses_a_pickle_file(tmp_path):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(_Tripwire()))
    with pytest.raises(ValueError, match="not a minibam checkpoint"):
        mbio.load(path)
    assert UNPICKLED == []


def test_load_refuses_non_checkpoints(tmp_path):
    plain = tmp_path / "plain.npz"
    np.savez(plain, w=np.ones(2))
    with pytest.raises(ValueError, match=r"not a minibam checkpoint.*without the '__minibam__'"):
        mbio.load(plain)

    single = tmp_path / "single.npy"
    np.save(single, np.ones(2))
    with pytest.raises(ValueError, match="not a minibam checkpoint.*single .npy"):
        mbio.load(single)

    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"this is not an archive" * 10)
    with pytest.raises(ValueError, match="not a minibam checkpoint"):
        mbio.load(garbage)

    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="not a minibam checkpoint"):
        mbio.load(empty)


def test_load_refuses_corrupt_and_truncated_checkpoints(tmp_path):
    good = tmp_path / "good.npz"
    mbio.save(_state(), good)
    data = good.read_bytes()

    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="minibam checkpoint"):
        mbio.load(truncated)

    # Flip bytes inside the first array's payload: the zip CRC check catches it.
    flipped = bytearray(data)
    offset = data.index(b"\x93NUMPY", 200) + 140
    flipped[offset:offset + 8] = bytes(b ^ 0xFF for b in flipped[offset:offset + 8])
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="corrupt checkpoint"):
        mbio.load(corrupt)


def test_load_refuses_a_newer_format(tmp_path):
    path = tmp_path / "future.npz"
    with zipfile.ZipFile(path, "w") as zf:
        with zf.open(mbio.MARKER + ".npy", "w") as member:
            np.lib.format.write_array(member, np.array(mbio.FORMAT_VERSION + 1))
    with pytest.raises(ValueError, match="format 2.*upgrade minibam"):
        mbio.load(path)


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        mbio.load(tmp_path / "nope.npz")


# --- issue 23: devices, FIFOs, odd headers and keys ------------------------------------


_LOAD_CAPPED = """
import resource, sys
import minibam as mb
resource.setrlimit(resource.RLIMIT_AS, (1 << 31, 1 << 31))  # a reader that reads on fails fast
try:
    mb.load(sys.argv[1] if sys.argv[1] != "-" else open("/dev/zero", "rb"))
except (ValueError, MemoryError) as error:
    print(type(error).__name__, error)
"""


@pytest.mark.parametrize("target", ["/dev/zero", "-"], ids=["path", "open-handle"])
def test_load_refuses_a_device_at_once(target):
    # /dev/zero reads forever; it is refused from its type, before a byte is read.
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", _LOAD_CAPPED, target], capture_output=True,
                            text=True, timeout=120)
    assert result.stdout.startswith("ValueError load: "), result.stdout + result.stderr
    assert "is not a regular file (a character device)" in result.stdout


def test_load_refuses_a_fifo_without_blocking(tmp_path):
    import os
    import threading

    fifo = tmp_path / "pipe.npz"
    os.mkfifo(fifo)
    outcome = []

    def load():
        try:
            mbio.load(fifo)
        except ValueError as error:
            outcome.append(str(error))

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    worker.join(timeout=10)
    if worker.is_alive():  # unblock the reader so the thread can end, then fail
        with open(fifo, "wb"):
            pass
        pytest.fail("mb.load blocked on a FIFO")
    assert outcome and "is not a regular file (a FIFO)" in outcome[0]


def _npy_with_shape(shape_text: str, payload: int) -> bytes:
    header = f"{{'descr': '<f8', 'fortran_order': False, 'shape': {shape_text}, }}"
    header = header.ljust(118) + "\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + b"\0" * payload


@pytest.mark.parametrize("shape", ["(True, 2)", "(2, False)", "(-1, -2)", "(-2, -1)", "(-1, -1)"])
def test_a_header_shape_that_is_not_sizes_is_refused_naming_the_member(tmp_path, shape):
    path = tmp_path / "odd.npz"
    with zipfile.ZipFile(path, "w") as zf:
        with zf.open(mbio.MARKER + ".npy", "w") as member:
            np.lib.format.write_array(member, np.array(mbio.FORMAT_VERSION))
        zf.writestr("w.npy", _npy_with_shape(shape, 16))
    with pytest.raises(ValueError, match=r"member 'w.npy' declares shape .* not a list of sizes"):
        mbio.load(path)


@pytest.mark.parametrize("key", ["a\0b", "\0", "bad\udc80surrogate"])
def test_a_key_the_zip_cannot_hold_is_refused_before_anything_is_written(tmp_path, key):
    path = tmp_path / "good.npz"
    mbio.save({"w": np.ones(2)}, path)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="save: state_dict key"):
        mbio.save({"w": np.zeros(2), key: np.ones(1)}, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.npz"]


# --- found by probing the promises with inputs the suite did not use -------------------


@pytest.mark.parametrize("dtype", ["<U3", "|S2", "datetime64[D]", "timedelta64[s]", "|V4",
                                   [("a", "<f8")]])
def test_save_refuses_what_load_would_refuse_and_keeps_the_old_file(tmp_path, dtype):
    path = tmp_path / "good.npz"
    mbio.save({"w": np.ones(2)}, path)
    before = path.read_bytes()
    with pytest.raises(TypeError, match=r"save: state_dict\['v'\] has dtype .*only numeric"):
        mbio.save({"w": np.ones(2), "v": np.zeros(2, dtype=dtype)}, path)
    assert path.read_bytes() == before


@pytest.mark.parametrize("key", ["a" * 65532, "é" * 40000])
def test_a_key_longer_than_a_zip_name_is_refused_as_a_value_error(tmp_path, key):
    path = tmp_path / "k.npz"
    with pytest.raises(ValueError, match="save: state_dict key .* bytes long"):
        mbio.save({key: np.ones(1)}, path)
    assert not path.exists()
    mbio.save({"a" * 65531: np.ones(1)}, path)  # the longest that fits, with ".npy"
    assert list(mbio.load(path)) == ["a" * 65531]


def test_a_path_ending_in_a_slash_is_a_directory_as_for_open(tmp_path):
    with pytest.raises(IsADirectoryError):
        open(str(tmp_path / "new.npz") + "/", "wb")
    with pytest.raises(IsADirectoryError, match="save: .* ends with a path separator"):
        mbio.save({"w": np.ones(2)}, str(tmp_path / "new.npz") + "/")
    assert list(tmp_path.iterdir()) == []


def test_an_open_file_of_the_wrong_kind_is_refused_naming_the_function(tmp_path):
    path = tmp_path / "good.npz"
    mbio.save({"w": np.ones(2)}, path)
    with open(tmp_path / "t.npz", "w") as text, pytest.raises(TypeError, match="save: .*text mode"):
        mbio.save({"w": np.ones(2)}, text)
    with open(path) as text, pytest.raises(TypeError, match="load: .*text mode"):
        mbio.load(text)
    with open(path, "rb") as reading, pytest.raises(ValueError, match="save: .*not open for writing"):
        mbio.save({"w": np.ones(2)}, reading)
    with open(path, "ab") as writing, pytest.raises(ValueError, match="load: .*not open for reading"):
        mbio.load(writing)
    assert list(mbio.load(path)) == ["w"]


def test_read_arrays_names_the_calling_command_and_the_kind_of_file(tmp_path):
    import os

    garbage = tmp_path / "case.npz"
    garbage.write_bytes(b"not a zip" * 10)
    with pytest.raises(ValueError, match=r"^compare: .*case.npz' is not a minibam reference case"):
        mbio.read_arrays(garbage, what="reference case", who="compare")
    os.mkfifo(tmp_path / "pipe.npz")
    with pytest.raises(ValueError, match=r"^compare: .*pipe.npz' is not a regular file \(a FIFO\); a reference case"):
        mbio.read_arrays(tmp_path / "pipe.npz", what="reference case", who="compare")
    np.savez(tmp_path / "plain.npz", x=np.ones(2))  # no marker needed: read_arrays reads any .npz
    assert list(mbio.read_arrays(tmp_path / "plain.npz", who="compare")) == ["x"]
