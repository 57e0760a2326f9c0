import os
import shutil
import subprocess
import tempfile
import uuid

import pytest

# Tests never reach the network, and the test process itself maps no region from the
# environment: each test makes the regions it checks.
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
os.environ["FAST_LITELLM_SHM"] = "off"


@pytest.fixture
def region_path():
    path = f"/dev/shm/fl-test-{uuid.uuid4().hex[:12]}"
    yield path
    if os.path.lexists(path):
        os.unlink(path)


@pytest.fixture
def small_tmpfs():
    """A 4 MiB tmpfs: a /dev/shm too small for the default region."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    d = tempfile.mkdtemp(prefix="fl-small-shm-")
    rc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", d]).returncode
    if rc != 0:
        os.rmdir(d)
        pytest.skip("this sandbox does not allow mounting a tmpfs")
    yield d
    subprocess.run(["umount", d], check=True)
    os.rmdir(d)
