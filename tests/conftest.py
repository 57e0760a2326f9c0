import os
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
