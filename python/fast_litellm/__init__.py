"""fast_litellm: a Rust accelerator for LiteLLM.

Importing it maps the process-wide shared region (FAST_LITELLM_SHM), so under
`gunicorn --preload` the master maps it once and every forked worker shares it, then patches
LiteLLM's rate limiter, router counters and upstream slots to keep their state there, and its
token counting to count in Rust (FAST_LITELLM_RUST_* flags; FAST_LITELLM_DISABLE=1 does neither).
`count_tokens_batch(model, texts)` counts many texts on every core.
"""

from . import _acceleration, shm
from ._acceleration import announce, remove_acceleration, status
from ._config import ConfigError
from ._native import __version__
from .tokens import count_tokens_batch

__all__ = ["ConfigError", "__version__", "count_tokens_batch", "remove_acceleration", "shm", "status"]

_region = None if _acceleration.disabled() else shm.region()
_acceleration.install_all(region=_region)
_acceleration.check_import_order(_region)
announce()
