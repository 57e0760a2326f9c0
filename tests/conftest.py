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


#: What the version matrix (scripts/matrix.sh: `pytest -m matrix` in a venv per LiteLLM minor)
#: runs: every component on, limiter parity and cross-process exactness, router usage,
#: cooldowns and slots, pool caps, token parity (FL_TOKEN_CASES cases), the auth's failed
#: import, the disable flag and import order, and the launcher's bootstrap. Named here, in
#: one place, rather than marked in each file.
MATRIX = {
    # What depends on the LiteLLM release; the rest (flag parsing, each flag alone, the
    # untested-version warning, the chunking constants) runs in the full suite on the pin.
    "test_compat.py": ("test_every_component_is_on_with_this_litellm",),
    "test_flags.py": ("test_disable_maps_nothing_and_patches_nothing", "test_import_order_does_not_matter_and_remove_restores"),
    "test_limiter.py": ("test_the_region_gives_exactly_what_litellm_gives", "test_processes_share_every_limit",
                        "test_max_parallel_requests_slots_are_host_wide_and_always_given_back",
                        "test_with_redis_rpm_windows_and_tpm_reservations_go_through_the_host_tier",
                        "test_with_redis_post_call_increments_are_settled_in_the_lease_or_deferred_or_sent_as_litellm_sends_them",
                        "test_with_redis_a_dead_hosts_parallel_request_slots_come_back_within_the_slot_ttl",
                        "test_with_redis_parallel_request_slots_come_from_the_hosts_pool_exactly",
                        "test_with_redis_unreachable_litellms_fail_closed_setting_refuses_what_the_tier_cannot_verify",
                        "test_with_redis_rpm_windows_and_the_read_only_check_go_through_the_host_tier_on_every_release"),
    "test_router.py": ("test_usage_counters_are_host_wide_and_per_process_with_the_flag_off",
                       "test_a_cooldown_set_in_one_process_is_honoured_in_another_and_expires",
                       "test_max_parallel_requests_slots_hold_across_processes_and_come_back_when_the_holder_dies",
                       "test_decisions_and_values_are_litellms_own_in_one_process"),
    "test_pool.py": ("test_the_per_host_limit_holds_for_all_workers_together",
                     "test_slots_come_back_after_errors_cancellations_timeouts_and_streams"),
    "test_tokens.py": ("test_parity_with_unpatched_litellm_on_generated_cases",),
    "test_auth.py": ("test_the_failed_import_is_run_once_and_logs_and_returns_what_litellms_own_does",),
    "test_gc_freeze.py": ("test_a_forked_worker_leaves_the_masters_pages_shared_and_startup_objects_are_frozen",),
    "test_launcher.py": ("test_the_bootstrap_imports_fast_litellm_before_the_proxy_app_and_keeps_the_users_sitecustomize",),
}


def pytest_configure(config):
    config.addinivalue_line("markers", "matrix: run by the version matrix in every LiteLLM minor (conftest.MATRIX)")


def pytest_collection_modifyitems(config, items):
    for item in items:
        names = MATRIX.get(item.path.name, ())
        if names is None or item.originalname in (names or ()):
            item.add_marker(pytest.mark.matrix)


@pytest.fixture
def redis_server():
    from redis_server import start

    server = start()
    yield server
    server.process.kill()
    server.process.wait()
