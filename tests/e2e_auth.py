"""custom_auth for the end-to-end tests: deploy/demo_auth.py's per-key limits, plus one line
per request in $FL_E2E_AUTH_LOG naming the worker that served it, so that a test knows how
its requests spread over the workers. (tests/proxy.py puts it next to each test's config.)"""

import os

from demo_auth import user_api_key_auth as demo_auth  # deploy/, the proxy's --chdir


async def user_api_key_auth(request, api_key: str):  # noqa: ANN001, ANN201 - LiteLLM's signature
    path = os.environ.get("FL_E2E_AUTH_LOG")
    if path:
        with open(path, "a") as f:  # one short O_APPEND write per request: whole lines
            f.write(f"{os.getpid()} {api_key}\n")
    return await demo_auth(request, api_key)
