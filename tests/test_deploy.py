"""deploy/'s files say what the code does: the /dev/shm sizes they set hold the default region,
and gunicorn.conf.py keeps --preload and the hooks that matter. (The images and manifests are
not built or applied here: this machine has no Docker engine and no Kubernetes cluster.)"""

import os
import re

import yaml

from fast_litellm import _native

DEPLOY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "deploy")
DEFAULT_REGION = _native.region_size(_native.DEFAULT_CAPACITY, _native.DEFAULT_MAX_WORKERS)


def _bytes(size: str) -> int:
    number, unit = re.fullmatch(r"(\d+)\s*([kmgKMG]i?)?[bB]?", str(size)).groups()
    return int(number) * {None: 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[(unit or "")[:1].lower() or None]


def _load(name):
    with open(os.path.join(DEPLOY, name)) as f:
        return list(yaml.safe_load_all(f))


def test_compose_shm_size_holds_the_default_region():
    (compose,) = _load("docker-compose.yml")
    service = compose["services"]["litellm"]
    assert _bytes(service["shm_size"]) >= DEFAULT_REGION
    assert service["environment"]["FAST_LITELLM_SHM"].startswith("/dev/shm/")


def test_kubernetes_mounts_a_memory_emptydir_at_dev_shm_large_enough():
    (deployment,) = _load("kubernetes.yaml")
    spec = deployment["spec"]["template"]["spec"]
    (volume,) = [v for v in spec["volumes"] if v.get("emptyDir")]
    assert volume["emptyDir"]["medium"] == "Memory"
    assert _bytes(volume["emptyDir"]["sizeLimit"]) >= DEFAULT_REGION
    mounts = spec["containers"][0]["volumeMounts"]
    assert {"name": volume["name"], "mountPath": "/dev/shm"} in mounts


def test_gunicorn_conf_preloads_and_has_the_hooks():
    conf = {}
    with open(os.path.join(DEPLOY, "gunicorn.conf.py")) as f:
        exec(compile(f.read(), "gunicorn.conf.py", "exec"), conf)  # noqa: S102 - our own file
    assert conf["preload_app"] is True
    assert conf["worker_class"] == "uvicorn.workers.UvicornWorker"
    for hook in ("when_ready", "post_fork", "child_exit"):
        assert callable(conf[hook]), hook


def test_the_demo_config_is_valid_yaml_with_a_non_default_master_key():
    (cfg,) = _load("demo-config.yaml")
    key = cfg["general_settings"]["master_key"]
    assert re.fullmatch(r"sk-[0-9a-f]{64}", key)
    assert cfg["general_settings"]["custom_auth"] == "demo_auth.user_api_key_auth"
