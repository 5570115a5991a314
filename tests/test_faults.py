"""Faults: threads, interrupted writes, hostile archives (docs/guarantees.md).

Each test reproduces a failure seen before the fix (issue 13): grad mode shared by all
threads, saves that destroyed the previous checkpoint when cut off, and loads that
allocated whatever a file declared.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import warnings
import zipfile

import numpy as np
import pytest

import minibam as mb
from minibam import io as mbio

# ------------------------------------------------------------------ grad mode per thread


def test_no_grad_in_one_thread_does_not_stop_another_from_recording():
    inside, done = threading.Event(), threading.Event()
    seen = {}

    def quiet():
        with mb.no_grad():
            inside.set()
            done.wait(5)
            seen["quiet"] = mb.is_grad_enabled()

    worker = threading.Thread(target=quiet)
    worker.start()
    assert inside.wait(5)
    x = mb.Tensor([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()  # the other thread is inside no_grad right now
    done.set()
    worker.join()
    assert mb.is_grad_enabled() and y.requires_grad
    y.backward()
    np.testing.assert_array_equal(x.grad, [2.0, 4.0])
    assert seen["quiet"] is False


def test_interleaved_no_grad_blocks_restore_each_threads_mode():
    # A enters, B enters, A leaves, B leaves: with one process-wide switch B restored
    # "off" (what it saw on entry) and grads stayed off for good.
    step = threading.Barrier(2, timeout=5)
    modes: dict[str, list[bool]] = {"a": [], "b": []}

    def a():
        with mb.no_grad():
            step.wait()  # 1: both inside
            step.wait()  # 2
        modes["a"].append(mb.is_grad_enabled())
        step.wait()  # 3: A is out, B still inside
        step.wait()  # 4
        modes["a"].append(mb.is_grad_enabled())

    def b():
        step.wait()  # 1
        with mb.no_grad():
            step.wait()  # 2
            step.wait()  # 3
            modes["b"].append(mb.is_grad_enabled())
        step.wait()  # 4
        modes["b"].append(mb.is_grad_enabled())
        t = mb.Tensor([3.0], requires_grad=True)
        modes["b"].append((t * t).requires_grad)

    threads = [threading.Thread(target=f) for f in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert modes == {"a": [True, True], "b": [False, True, True]}
    assert mb.is_grad_enabled()


def test_a_new_thread_starts_with_grad_enabled_even_if_its_parent_is_in_no_grad():
    seen = []
    with mb.no_grad():
        worker = threading.Thread(target=lambda: seen.append(mb.is_grad_enabled()))
        worker.start()
        worker.join()
    assert seen == [True]  # as PyTorch: the mode is per thread, not inherited


# ------------------------------------------------------------------------- atomic saves


def _state(scale: float = 1.0) -> dict[str, np.ndarray]:
    return {"w": np.arange(6.0).reshape(2, 3) * scale, "b": np.ones(3) * scale}


def _run(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args],
                          capture_output=True, text=True, timeout=120)


def _only_the_target(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_save_cut_off_by_a_file_size_limit_keeps_the_old_checkpoint(tmp_path):
    path = tmp_path / "model.npz"
    mb.save(_state(), path)
    before = path.read_bytes()
    result = _run("""
        import resource, sys
        import numpy as np
        import minibam as mb
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))  # far below the new file
        try:
            mb.save({"big": np.zeros(100_000)}, sys.argv[1])
        except OSError as error:
            print("refused:", error.errno)
        """, str(path))
    assert "refused: 27" in result.stdout, result.stderr  # EFBIG
    assert path.read_bytes() == before
    assert _only_the_target(tmp_path) == ["model.npz"]  # no partial file left behind
    np.testing.assert_array_equal(mb.load(path)["w"], _state()["w"])


def test_a_save_interrupted_by_sigint_keeps_the_old_checkpoint(tmp_path):
    path = tmp_path / "model.npz"
    mb.save(_state(), path)
    before = path.read_bytes()
    # A real SIGINT, delivered after the first member of the new file has been written.
    result = _run("""
        import os, signal, sys
        import numpy as np
        import minibam as mb
        # Python leaves SIGINT ignored when it started so (a job run in the background,
        # as CI may); a user's Ctrl-C reaches an interactive process as KeyboardInterrupt.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        write_array = np.lib.format.write_array
        def write_then_interrupt(*args, **kwargs):
            write_array(*args, **kwargs)
            os.kill(os.getpid(), signal.SIGINT)
        np.lib.format.write_array = write_then_interrupt
        try:
            mb.save({"a": np.zeros(1000), "b": np.zeros(1000)}, sys.argv[1])
        except KeyboardInterrupt:
            print("interrupted")
        """, str(path))
    assert "interrupted" in result.stdout, result.stderr
    assert path.read_bytes() == before
    assert _only_the_target(tmp_path) == ["model.npz"]


def test_a_failed_save_leaves_no_file_and_a_good_one_keeps_permissions(tmp_path):
    path = tmp_path / "new.npz"
    with pytest.raises(TypeError):
        mb.save({"ok": np.ones(2), "bad": np.array([object()])}, path)
    assert _only_the_target(tmp_path) == []
    mb.save(_state(), path)
    os.chmod(path, 0o640)
    mb.save(_state(2.0), path)
    assert os.stat(path).st_mode & 0o777 == 0o640
    np.testing.assert_array_equal(mb.load(path)["b"], 2 * np.ones(3))


def test_reference_command_writes_atomically(tmp_path, monkeypatch):
    from minibam.checks import reference

    path = tmp_path / "case.npz"
    path.write_bytes(b"earlier file")

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(reference.np, "savez", fail)
    with pytest.raises(OSError):
        reference.save_arrays(path, {"x": np.ones(3)})
    assert path.read_bytes() == b"earlier file"
    assert _only_the_target(tmp_path) == ["case.npz"]


# -------------------------------------------------------------------- hostile archives


def _npy_header(shape: tuple, dtype: str = "<f8", version: tuple = (1, 0)) -> bytes:
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    import io

    buffer = io.BytesIO()
    if version == (1, 0):
        np.lib.format.write_array_header_1_0(buffer, header)
    else:
        np.lib.format.write_array_header_2_0(buffer, header)
    return buffer.getvalue()


def _archive(path, members: list[tuple[str, bytes]], compress: bool = False) -> None:
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with warnings.catch_warnings(), zipfile.ZipFile(path, "w", compression=method) as zf:
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate names we want
        for name, data in members:
            zf.writestr(name, data)


def _npy(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=False)
    return buffer.getvalue()


MARKER = (mbio.MARKER + ".npy", _npy(np.array(1)))


def test_absurd_declared_shape_is_a_value_error_not_a_memory_error(tmp_path):
    path = tmp_path / "absurd.npz"
    # 10^18 float64 values declared in a file of a few hundred bytes.
    _archive(path, [MARKER, ("w.npy", _npy_header((10**18,)) + b"\0" * 64)])
    assert path.stat().st_size < 1000
    with pytest.raises(ValueError, match=r"member 'w.npy' declares shape \(1000000000000000000,\)"):
        mb.load(path)


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([MARKER, ("notes.txt", b"hello")], "member 'notes.txt' is not an .npy array"),
        ([MARKER, ("w.npy", _npy(np.ones(2))), ("w.npy", _npy(np.zeros(2)))],
         "member 'w.npy' appears twice"),
        ([MARKER, ("w.npy", b"\x93NUMPY\x07\x00" + b"\0" * 64)],
         "member 'w.npy'.*(format version|corrupt)"),
        ([MARKER, ("w.npy", _npy(np.array(["a", "b"])))], "member 'w.npy' has dtype <U1"),
        ([MARKER, ("w.npy", _npy(np.zeros(2, dtype=[("a", "<f8")])))], "member 'w.npy' has dtype"),
        ([MARKER, ("w.npy", _npy_header((4,), "|O"))], "member 'w.npy' contains pickled"),
        ([MARKER, ("w.npy", _npy_header((100,)) + b"\0" * 16)],
         "member 'w.npy' declares shape \\(100,\\).*holds 16 bytes"),
        ([(mbio.MARKER + ".npy", _npy(np.array(-7)))], "'__minibam__.npy' must hold the format"),
        ([(mbio.MARKER + ".npy", _npy(np.array(1.9)))], "'__minibam__.npy' must hold the format"),
        ([(mbio.MARKER + ".npy", _npy(np.array([1, 1])))], "'__minibam__.npy' must hold the format"),
    ],
    ids=["non-array", "duplicate", "bad-npy-version", "strings", "structured", "object",
         "size-mismatch", "marker-negative", "marker-float", "marker-not-scalar"],
)
def test_hostile_members_are_refused_naming_the_member(tmp_path, members, message):
    path = tmp_path / "hostile.npz"
    _archive(path, members)
    with pytest.raises(ValueError, match=message):
        mb.load(path)


def _bomb(path, values: int) -> None:
    """A deflated member of ``values`` float64 zeros: about 1000x smaller than its data."""
    header = _npy_header((values,))
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(*MARKER)
        with zf.open("w.npy", "w", force_zip64=True) as member:
            member.write(header)
            chunk = bytes(1 << 22)
            left = values * 8
            while left:
                member.write(chunk[: min(left, len(chunk))])
                left -= min(left, len(chunk))


MEASURE = """
import resource, sys
import numpy as np
import minibam as mb
np.ones(1 << 20).sum()  # warm up NumPy's own allocations before the baseline
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    mb.load(sys.argv[1])
    outcome = "loaded"
except ValueError as error:
    outcome = "refused: " + str(error)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) * 1024, outcome)
"""


def test_an_archive_bomb_is_refused_within_bounded_memory(tmp_path):
    path = tmp_path / "bomb.npz"
    _bomb(path, 30_000_000)  # 240 MB of zeros in a file of about 230 kB
    size = path.stat().st_size
    assert size < 400_000
    result = _run(MEASURE, str(path))
    grew, outcome = result.stdout.split(" ", 1)
    assert outcome.startswith("refused:") and "member 'w.npy'" in outcome, result.stderr
    # Refused before any allocation: the process grew by well under the bound it promises.
    assert int(grew) < mbio.MAX_EXPANSION * size + mbio.SLACK_BYTES + (8 << 20)


def test_loading_an_honest_checkpoint_uses_about_its_own_size(tmp_path):
    path = tmp_path / "honest.npz"
    mb.save({"w": np.random.default_rng(0).standard_normal(4_000_000)}, path)  # 32 MB
    result = _run(MEASURE, str(path))
    grew, outcome = result.stdout.split(" ", 1)
    assert outcome.strip() == "loaded", result.stderr
    assert int(grew) < 1.5 * path.stat().st_size


def test_a_modest_compressed_archive_still_loads(tmp_path):
    path = tmp_path / "compressed.npz"
    state = {mbio.MARKER: np.array(1), "w": np.linspace(0, 1, 1000), "z": np.zeros(5000)}
    np.savez_compressed(path, **state)
    loaded = mb.load(path)
    np.testing.assert_array_equal(loaded["w"], state["w"])
    np.testing.assert_array_equal(loaded["z"], state["z"])


# --- Saving onto what is already there (issue 23, item 5) -----------------------------

NOBODY = 65534

_AS_ANOTHER_USER = """
import os, sys
import numpy as np
import minibam as mb  # imported first: root's Python may not be readable by others
if os.geteuid() == 0:  # root may write anything: drop to an ordinary user first
    os.setgid(65534)
    os.setuid(65534)
path = sys.argv[1]
for name, write in (("open", lambda: open(path, "wb")),
                    ("save", lambda: mb.save({"w": np.zeros(2)}, path))):
    try:
        write()
        print(name, "wrote")
    except PermissionError:
        print(name, "PermissionError")
"""


@pytest.fixture
def shared_folder():
    """A folder an ordinary user may write in (pytest's tmp_path is root's own)."""
    import shutil
    import tempfile

    folder = tempfile.mkdtemp(prefix="minibam-")
    os.chmod(folder, 0o777)
    yield folder
    shutil.rmtree(folder)


def test_a_read_only_checkpoint_is_refused_as_open_for_writing_refuses_it(shared_folder):
    path = os.path.join(shared_folder, "frozen.npz")
    mb.save(_state(), path)
    if os.geteuid() == 0:
        os.chown(path, NOBODY, NOBODY)
    os.chmod(path, 0o444)
    before = open(path, "rb").read()
    result = _run(_AS_ANOTHER_USER, path)
    assert result.stdout.split("\n")[:2] == ["open PermissionError", "save PermissionError"], (
        result.stdout + result.stderr)
    assert open(path, "rb").read() == before
    assert sorted(os.listdir(shared_folder)) == ["frozen.npz"]


def test_saving_through_a_symlink_writes_its_target_and_keeps_the_link(tmp_path):
    real_folder = tmp_path / "store"
    real_folder.mkdir()
    target = real_folder / "model.npz"
    mb.save(_state(), target)
    link = tmp_path / "latest.npz"
    link.symlink_to(os.path.relpath(target, tmp_path))
    mb.save(_state(3.0), link)
    assert link.is_symlink() and os.readlink(link) == os.path.relpath(target, tmp_path)
    np.testing.assert_array_equal(mb.load(target)["b"], 3 * np.ones(3))
    assert sorted(p.name for p in real_folder.iterdir()) == ["model.npz"]  # no temporary left
    # A dangling link gets its target created, as open(link, "wb") would.
    dangling = tmp_path / "next.npz"
    dangling.symlink_to(real_folder / "new.npz")
    mb.save(_state(), dangling)
    assert dangling.is_symlink() and (real_folder / "new.npz").is_file()


def test_saving_onto_a_fifo_is_refused_and_leaves_it(tmp_path):
    fifo = tmp_path / "pipe.npz"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match=r"save: .*pipe.npz' is not a regular file \(a FIFO\)"):
        mb.save(_state(), fifo)
    assert _only_the_target(tmp_path) == ["pipe.npz"]
    import stat
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                    reason="only root may give a file to another user")
def test_root_replacing_another_users_checkpoint_keeps_its_owner_and_mode(tmp_path):
    path = tmp_path / "theirs.npz"
    mb.save(_state(), path)
    os.chown(path, NOBODY, NOBODY)
    os.chmod(path, 0o600)
    mb.save(_state(5.0), path)
    info = os.stat(path)
    assert (info.st_uid, info.st_gid, info.st_mode & 0o7777) == (NOBODY, NOBODY, 0o600)
    np.testing.assert_array_equal(mb.load(path)["b"], 5 * np.ones(3))


@pytest.mark.parametrize("length", [238, 250, 255])
def test_the_longest_file_names_can_be_saved(tmp_path, length):
    path = tmp_path / ("m" * (length - 4) + ".npz")
    mb.save(_state(), path)
    mb.save(_state(2.0), path)  # replacing works too
    assert _only_the_target(tmp_path) == [path.name]


def test_a_new_file_follows_the_umask_of_the_moment_it_is_written(tmp_path):
    result = _run("""
        import os, sys
        import numpy as np
        os.umask(0o022)
        import minibam as mb
        assert os.umask(0o022) == 0o022, "import minibam changed the umask"
        os.umask(0o077)  # set after the import, as a notebook might
        mb.save({"w": np.ones(2)}, sys.argv[1] + "/private.npz")
        os.umask(0o002)
        mb.save({"w": np.ones(2)}, sys.argv[1] + "/shared.npz")
        assert os.umask(0o022) == 0o002, "mb.save changed the umask"
        """, str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert os.stat(tmp_path / "private.npz").st_mode & 0o777 == 0o600
    assert os.stat(tmp_path / "shared.npz").st_mode & 0o777 == 0o664


def test_the_umask_fallback_without_proc_reads_it_and_puts_it_back(monkeypatch):
    from minibam import _atomic

    def no_proc(*args, **kwargs):
        raise OSError("no /proc here")

    monkeypatch.setattr(_atomic, "open", no_proc, raising=False)
    previous = os.umask(0o027)
    try:
        assert _atomic.current_umask() == 0o027
        assert os.umask(0o027) == 0o027  # left as it was
    finally:
        os.umask(previous)
