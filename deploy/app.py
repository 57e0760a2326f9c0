"""The accelerated LiteLLM proxy, for gunicorn:

    CONFIG_FILE_PATH=config.yaml FAST_LITELLM_SHM=/dev/shm/fl \
        gunicorn --chdir deploy app:app -c deploy/gunicorn.conf.py

fast_litellm is imported first, so under --preload the master maps the shared region and
patches LiteLLM before the proxy module exists; every forked worker inherits both.
"""

import fast_litellm  # noqa: F401  (first, on purpose: see above)
from litellm.proxy.proxy_server import app

__all__ = ["app"]
