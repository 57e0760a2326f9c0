"""fast_litellm: a Rust accelerator for LiteLLM.

Importing it maps the process-wide shared region (FAST_LITELLM_SHM), so under
`gunicorn --preload` the master maps it once and every forked worker shares it.
"""

from . import shm
from ._acceleration import announce, remove_acceleration, status
from ._config import ConfigError
from ._native import __version__

__all__ = ["ConfigError", "__version__", "remove_acceleration", "shm", "status"]

shm.region()
announce()
