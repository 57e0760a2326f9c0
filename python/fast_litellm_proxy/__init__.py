"""LiteLLM's own proxy, accelerated in every process it starts.

- `fast-litellm ARGS...` (`launcher.main`) runs `litellm ARGS...` with fast_litellm active in
  the master and in every worker, whatever server LiteLLM starts (uvicorn workers, gunicorn,
  granian, hypercorn).
- `litellm_settings: {callbacks: ["fast_litellm_proxy.activate.callback"]}` in config.yaml
  (`activate`) turns it on in every worker when the command cannot be changed.

This package lives outside `fast_litellm` on purpose: importing `fast_litellm` maps the region
and patches LiteLLM at once, and both entry points must choose the region before that.
Nothing here imports `fast_litellm` or `litellm` at import time.
"""
