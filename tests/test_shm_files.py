"""Region files that are corrupt, foreign, truncated, misowned, or do not fit; and the
environment settings. Every case must end in a clear Python exception, never a crash."""

import os
import pwd
import shutil
import stat
import struct
import subprocess
import sys
import tempfile

import pytest

from fast_litellm import shm


def make_region(path, capacity=1024):
    r = shm.Region(path, capacity=capacity)
    r.hit("k", 5)
    r.close()
    del r


def test_a_new_region_file_is_private_and_fully_reserved(region_path):
    r = shm.Region(region_path, capacity=1024)
    st = os.stat(region_path)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_size == shm.region_size(1024, 128) == r.size_bytes
    assert st.st_blocks * 512 >= st.st_size, "the bytes are reserved up front, not sparse"


def test_a_foreign_file_is_refused(region_path):
    with open(region_path, "wb") as f:
        f.write(b"this is somebody else's file\n" * 1000)
    with pytest.raises(shm.RegionFormatError, match="magic"):
        shm.Region(region_path)
    with open(region_path, "rb") as f:
        assert f.read(4) == b"this", "the foreign file was left untouched"


def test_random_bytes_are_refused(region_path):
    with open(region_path, "wb") as f:
        f.write(os.urandom(1 << 20))
    with pytest.raises(shm.RegionFormatError):
        shm.Region(region_path)


def test_a_truncated_region_is_refused(region_path):
    make_region(region_path)
    os.truncate(region_path, os.path.getsize(region_path) - 4096)
    with pytest.raises(shm.RegionFormatError, match="truncated"):
        shm.Region(region_path)
    os.truncate(region_path, 100)
    with pytest.raises(shm.RegionFormatError, match="truncated"):
        shm.Region(region_path)


@pytest.mark.parametrize(
    "offset, value, message",
    [
        (8, 99, "layout version 99"),
        (12, 128, "slot size"),
        (24, 1000, "power of two"),
        (28, 1, "max_workers"),
    ],
)
def test_every_header_field_is_validated(region_path, offset, value, message):
    make_region(region_path)
    with open(region_path, "r+b") as f:
        f.seek(offset)
        f.write(struct.pack("<I", value))
    with pytest.raises(shm.RegionFormatError, match=message):
        shm.Region(region_path)
    with pytest.raises(shm.RegionFormatError, match=message):
        shm.RegionView(region_path)


def test_a_header_size_that_disagrees_with_the_file_is_refused(region_path):
    make_region(region_path)
    with open(region_path, "r+b") as f:
        f.seek(32)
        f.write(struct.pack("<Q", 1 << 40))
    with pytest.raises(shm.RegionFormatError, match="header says"):
        shm.Region(region_path)


def test_an_interrupted_creation_is_redone(region_path):
    # A creator killed before writing the magic leaves an all-zero header.
    # It may have asked for a larger region than the next creator does.
    with open(region_path, "wb") as f:
        f.write(b"\0" * (shm.region_size(1024, 128) + 8192))
    os.chmod(region_path, 0o600)
    r = shm.Region(region_path, capacity=1024)
    assert r.attach == "created"
    assert r.hit("k", 1).allowed
    assert os.path.getsize(region_path) == r.size_bytes
    assert shm.Region(region_path).attach == "reused", "later attachers accept the redone region"


def test_a_symlink_is_not_followed(region_path):
    target = region_path + "-target"
    make_region(target)
    os.symlink(target, region_path)
    try:
        with pytest.raises(shm.RegionPermissionError, match="symbolic link"):
            shm.Region(region_path)
    finally:
        os.unlink(target)


def test_a_directory_and_a_device_are_refused_with_one_error_class(region_path):
    os.mkdir(region_path)
    try:
        with pytest.raises(shm.RegionFormatError, match="is a directory, not a regular file"):
            shm.Region(region_path)
    finally:
        os.rmdir(region_path)
    with pytest.raises(shm.RegionFormatError, match="/dev/null is not a regular file"):
        shm.Region("/dev/null")


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
def test_a_file_of_another_user_is_refused(region_path):
    make_region(region_path)
    nobody = pwd.getpwnam("nobody").pw_uid
    os.chown(region_path, nobody, -1)
    with pytest.raises(shm.RegionPermissionError, match=f"owned by uid {nobody}"):
        shm.Region(region_path)


def test_a_full_dev_shm_fails_at_start_naming_shm_size(small_tmpfs):
    path = os.path.join(small_tmpfs, "fl")
    with pytest.raises(shm.RegionSpaceError, match="--shm-size"):
        shm.Region(path)  # the default 16.5 MiB does not fit in 4 MiB
    assert os.path.getsize(path) == 0, "no half-reserved file is left for the next attacher"
    # A region sized to fit works in the same place.
    r = shm.Region(path, capacity=1024)
    assert r.hit("k", 1).allowed


def run_python(code, **env):
    full_env = dict(os.environ)
    full_env.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=60)


def test_the_process_region_follows_fast_litellm_shm(region_path):
    out = run_python(
        "import fast_litellm; from fast_litellm import shm; r = shm.region(); print(r.path, r.capacity)",
        FAST_LITELLM_SHM=region_path,
        FAST_LITELLM_SHM_CAPACITY="3000",
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [region_path, "4096"]
    out = run_python("from fast_litellm import shm; print(shm.region())", FAST_LITELLM_SHM="off")
    assert out.stdout.strip() == "None"


def test_without_fast_litellm_shm_an_anonymous_region_is_shared_with_forked_children():
    code = (
        "import os; from fast_litellm import shm\n"
        "r = shm.region(); assert r.path is None\n"
        "pids = [os.fork() for _ in range(1)]\n"
        "if pids[0] == 0:\n"
        "    [r.hit('k', 7, 600.0) for _ in range(5)]; os._exit(0)\n"
        "os.waitpid(pids[0], 0)\n"
        "print(r.hit('k', 7, 600.0).current)\n"
    )
    env = dict(os.environ)
    env.pop("FAST_LITELLM_SHM")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "6"


@pytest.mark.parametrize(
    "name, value",
    [
        ("FAST_LITELLM_SHM_CAPACITY", "lots"),
        ("FAST_LITELLM_SHM_CAPACITY", "-5"),
        ("FAST_LITELLM_SHM_WORKERS", "1.5"),
        ("FAST_LITELLM_SHM_FULL_POLICY", "maybe"),
        ("FAST_LITELLM_SHM", "relative/path"),
    ],
)
def test_a_bad_setting_fails_at_import_naming_the_variable(region_path, name, value):
    env = {"FAST_LITELLM_SHM": region_path, name: value}
    out = run_python("import fast_litellm", **env)
    assert out.returncode != 0
    assert "ConfigError" in out.stderr and name in out.stderr, out.stderr
