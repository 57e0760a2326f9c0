"""Per-key limits without a database, for the demo and the end-to-end tests: LiteLLM's
`general_settings.custom_auth` hook. A key `sk-<anything>-rpm<N>` gets rpm_limit N; a key
`sk-<anything>-tpm<N>` gets tpm_limit N; a key `sk-<anything>-par<N>` gets
max_parallel_requests N; any other `sk-` key has no limit.
"""

import re

from litellm.proxy._types import UserAPIKeyAuth

_LIMIT = re.compile(r"-(rpm|tpm|par)(\d+)$")


async def user_api_key_auth(request, api_key: str) -> UserAPIKeyAuth:  # noqa: ANN001 - LiteLLM's signature
    if not api_key.startswith("sk-"):
        raise Exception("keys start with sk-")  # LiteLLM turns this into a 401
    match = _LIMIT.search(api_key)
    if match is None:
        return UserAPIKeyAuth(api_key=api_key)
    kind, value = match.group(1), int(match.group(2))
    if kind == "rpm":
        return UserAPIKeyAuth(api_key=api_key, rpm_limit=value)
    if kind == "tpm":
        return UserAPIKeyAuth(api_key=api_key, tpm_limit=value)
    return UserAPIKeyAuth(api_key=api_key, max_parallel_requests=value)
