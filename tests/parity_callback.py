"""A LiteLLM callback for the parity tests (tests/proxy.py puts it next to each config): every
success and failure event's `standard_logging_object` and `response_cost`, one JSON line per
event in $FL_PARITY_LOG, with the `parity` tag the test put in the request's metadata."""

import json
import os

from litellm.integrations.custom_logger import CustomLogger


class ParityLog(CustomLogger):
    def _write(self, event: str, kwargs: dict) -> None:
        path = os.environ.get("FL_PARITY_LOG")
        if not path:
            return
        payload = kwargs.get("standard_logging_object") or {}
        metadata = payload.get("metadata") or {}
        tag = (metadata.get("requester_metadata") or {}).get("parity")
        line = json.dumps({"event": event, "tag": tag, "response_cost": kwargs.get("response_cost"),
                           "standard_logging_object": payload}, default=str, sort_keys=True)
        with open(path, "a") as f:  # one O_APPEND write per event: whole lines
            f.write(line + "\n")

    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):  # noqa: ANN001 - LiteLLM's
        self._write("success", kwargs)

    async def async_log_failure_event(self, kwargs, response_obj, start_time, end_time):  # noqa: ANN001 - LiteLLM's
        self._write("failure", kwargs)


handler = ParityLog()
