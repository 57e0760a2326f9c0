"""token_counting: LiteLLM's token counts, computed in Rust, the same integers.

What LiteLLM does
    `litellm.token_counter` (litellm/utils.py, the same as litellm_core_utils/token_counter.py
    `token_counter`) picks a tokenizer for the model on every call (`select_tokenizer`, then
    `openai_tokenizer_encoding_name`: cl100k_base for unknown names and provider-prefixed ones,
    o200k_base for gpt-4o / gpt-4.1 / gpt-5 ..., p50k_base for the davinci family), walks the
    messages adding 3 tokens per message and 1 per name (4 and -1 for gpt-3.5-turbo-0301),
    counts every text in 1024-character chunks (`TIKTOKEN_ENCODE_CHUNK_SIZE_CHARS`),
    extrapolates past `TOKEN_COUNTER_MAX_EXACT_CHARS` characters, and adds 3 for the reply
    plus the tool definitions and tool_choice.

What this component does
    1. `token_counter` of litellm_core_utils (and every module that copied it; LiteLLM's
       `litellm.token_counter` in utils calls it) does the whole count in one native call:
       the model's encoding and message constants come from a per-process cache filled by
       LiteLLM's own selection functions, keyed by everything they read (the name, its
       membership in LiteLLM's four model lists, `disable_hf_tokenizer_download`); the
       message walk and the counting run in Rust (`_native.TokenCounter.count_messages`);
       the tool definitions are formatted by LiteLLM's own `_format_function_definitions`.
    2. `_get_count_function`, which every other count of LiteLLM's goes through
       (`messages_reach_token_count`, documents, PDFs, Anthropic blocks, and the calls that 1.
       declines), returns the native counter for tiktoken encodings.
    Long texts are counted with the GIL released, so LiteLLM's counting pool
    (`offload_token_count`, 4 threads per event loop) counts in parallel. Encoders load on
    the first count in each process, not at import; `preload()` loads them now, so that
    processes forked afterwards (gunicorn workers) share the parent's copy.

Declined (LiteLLM's own function runs, counted as `declined`)
    Models with a Hugging Face tokenizer (llama, cohere command-r, pre-3 claude) unless
    `litellm.disable_hf_tokenizer_download`; a custom tokenizer other than the openai one;
    message shapes that need more than text (a high-detail image, an Anthropic image, a
    document, a file, tool_use/tool_result blocks, search results) or that LiteLLM would
    raise on, or whose own methods raise; objects that are not exactly dicts and lists where
    those are expected (after LiteLLM's own conversion of pydantic messages); messages that
    are not a list or tuple (an iterator read here would reach LiteLLM used up). For those,
    part 2 still counts the text. Not watched: a model registered with tiktoken itself at run
    time after its first count.

`count_tokens_batch(model, texts)` is `[litellm.token_counter(model=model, text=t) for t in
texts]`, counted on every core at once (FAST_LITELLM_BATCH_TOKEN_COUNTING).
"""

from __future__ import annotations

import inspect
import sys
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

from . import _native
from ._acceleration import Component, Decline

__all__ = ["count_tokens_batch", "install", "install_batch", "preload"]

#: The most distinct model names whose plans are kept; past it the cache starts over (the
#: proxy's /utils/token_counter takes any name a client sends).
MAX_PLANS = 1024


@dataclass(frozen=True)
class Plan:
    """How LiteLLM counts for one model: the encoding, and the per-message and per-name tokens."""

    counter: _native.TokenCounter
    per_message: int
    per_name: int


class _LiteLLM:
    """The LiteLLM names the counting follows, looked up once at install."""

    def __init__(self) -> None:
        import litellm
        import litellm.utils as utils
        from litellm.litellm_core_utils import token_counter as core

        # Any: LiteLLM's modules are read by name, checked at install (_check_litellm).
        self.litellm: Any = litellm
        self.utils: Any = utils
        self.core: Any = core
        _check_litellm(self)
        base_tokens = inspect.signature(self.core.calculate_img_tokens).parameters["base_tokens"].default
        self.base_image_tokens = int(base_tokens)  # a default argument: fixed once defined
        self.chunking = (int(self.core.TIKTOKEN_ENCODE_CHUNK_SIZE_CHARS), int(self.core.TOKEN_COUNTER_MAX_EXACT_CHARS))
        self.counters: Dict[str, _native.TokenCounter] = {}
        self.plans: Dict[Any, Optional[Plan]] = {}

    def counter(self, encoding: str) -> Optional[_native.TokenCounter]:
        if encoding not in self.counters:
            try:
                self.counters[encoding] = _native.TokenCounter(encoding, *self.chunking)
            except ValueError:  # r50k_base and the like: LiteLLM's own tiktoken counts those
                return None
        return self.counters[encoding]

    def _make_plan(self, model: Optional[str], openai_tokenizer: bool) -> Optional[Plan]:
        core, utils = self.core, self.utils
        if model is None and not openai_tokenizer:
            encoding = "cl100k_base"  # get_default_encoding()
        else:
            if (
                not openai_tokenizer
                and self.litellm.disable_hf_tokenizer_download is not True
                and utils.huggingface_tokenizer_kind(model) is not None
            ):
                return None
            encoding = core.openai_tokenizer_encoding_name(model)
        counter = self.counter(encoding)
        if counter is None:
            return None
        legacy = core.uses_legacy_message_accounting(model)
        return Plan(counter, 4 if legacy else 3, -1 if legacy else 1)

    def plan(self, model: Any, custom_tokenizer: Any) -> Plan:
        """The plan LiteLLM would follow for this call; Decline when it is not a tiktoken one.

        LiteLLM's choice reads the model name, whether that name is in each of its four model
        lists, and `disable_hf_tokenizer_download`: all of it is the cache key, so a model
        added to (or removed from) a list at run time is planned afresh."""
        if model is not None and type(model) is not str:
            raise Decline("model name is not a str")
        if custom_tokenizer is None:
            openai_tokenizer = False
        elif type(custom_tokenizer) is dict and custom_tokenizer and custom_tokenizer.get("type") == "openai_tokenizer":
            openai_tokenizer = True  # LiteLLM then counts with the model's own encoding
        else:
            raise Decline("custom tokenizer")
        lt = self.litellm
        key = (
            model, openai_tokenizer, lt.disable_hf_tokenizer_download, model in lt.open_ai_chat_completion_models,
            model in lt.azure_llms, model in lt.cohere_models, model in lt.anthropic_models,
        )
        plan = self.plans.get(key, _UNKNOWN)
        if plan is _UNKNOWN:
            if len(self.plans) >= MAX_PLANS:
                self.plans.clear()
            plan = self.plans[key] = self._make_plan(model, openai_tokenizer)
        if plan is None:
            raise Decline(f"model {model!r} does not count with a tiktoken encoding served here")
        return plan  # type: ignore[return-value]


#: A model not planned yet (None is a plan: "LiteLLM counts it itself").
_UNKNOWN = object()
_m: Optional[_LiteLLM] = None


def _lite() -> _LiteLLM:
    global _m
    if _m is None:
        _m = _LiteLLM()
    return _m


def _count_extra(m: _LiteLLM, counter: _native.TokenCounter, tools: Any, tool_choice: Any, includes_system: bool) -> int:
    """`_count_extra`: the reply's 3 tokens, the tool definitions and tool_choice."""
    tokens = 3
    if tools:
        tokens += counter.count(m.core._format_function_definitions(tools)) + 9
        if includes_system:
            tokens -= 4
    if tool_choice == "none":
        tokens += 1
    elif isinstance(tool_choice, dict):
        tokens += 7 + counter.count(str(tool_choice["function"]["name"]))
    return tokens


def token_counter(
    model: Any = "",
    custom_tokenizer: Any = None,
    text: Any = None,
    messages: Any = None,
    count_response_tokens: Any = False,
    tools: Any = None,
    tool_choice: Any = None,
    use_default_image_token_count: Any = False,
    default_token_count: Any = None,
) -> int:
    """LiteLLM's `token_counter`, one native call for the usual shapes (see the module doc)."""
    m = _lite()
    if m.litellm.disable_token_counter is True:
        return 0
    plan = m.plan(model, custom_tokenizer)
    # Exceptions from the caller's objects (their __bool__, __str__, model_dump, a tool schema
    # LiteLLM's formatter refuses) are not errors of this path: LiteLLM's own function then
    # raises them, or counts around them, itself.
    try:
        return _count(m, plan, text, messages, count_response_tokens, tools, tool_choice, use_default_image_token_count)
    except (Decline, _native.TokenCountError):
        raise
    except Exception as error:  # noqa: BLE001 - see above
        raise Decline(f"LiteLLM handles these inputs itself: {error!r}") from None


def _count(
    m: _LiteLLM, plan: Plan, text: Any, messages: Any, count_response_tokens: Any, tools: Any, tool_choice: Any,
    use_default_image_token_count: Any,
) -> int:
    counter = plan.counter
    if text is not None:
        if messages is not None or tools or tool_choice:
            raise Decline("LiteLLM refuses text with messages, tools or tool_choice")
        if isinstance(text, str):
            return counter.count(text)
        if isinstance(text, list):
            return counter.count("".join(t for t in text if isinstance(t, str)))
        raise Decline("text is neither a str nor a list")
    if messages is None:
        raise Decline("neither text nor messages")
    if type(messages) not in (list, tuple) or (tools is not None and iter(tools) is tools):
        # Another Sequence, or an iterator that reading would use up before LiteLLM's own
        # function got it on a decline.
        raise Decline("messages are not a list or tuple, or tools an iterator")
    args = (
        plan.per_message, plan.per_name, bool(use_default_image_token_count),
        int(m.core.DEFAULT_IMAGE_TOKEN_COUNT), m.base_image_tokens,
    )
    counted = counter.count_messages(messages, *args)
    if counted is None:  # pydantic messages: LiteLLM's own conversion, then the same walk
        counted = counter.count_messages(m.utils.convert_list_message_to_dict(messages), *args)
    if counted is None:
        raise Decline("a message shape LiteLLM counts itself")
    tokens, includes_system = counted
    if count_response_tokens is False:
        tokens += _count_extra(m, counter, tools, tool_choice, includes_system)
    return tokens


def get_count_function(model: Any, custom_tokenizer: Any = None) -> Callable[[str], int]:
    """LiteLLM's `_get_count_function`: the native counter for a tiktoken encoding."""
    return _lite().plan(model, custom_tokenizer).counter.count


TOKEN_COUNTER_PARAMETERS = (
    "model", "custom_tokenizer", "text", "messages", "count_response_tokens", "tools", "tool_choice",
    "use_default_image_token_count", "default_token_count",
)
#: Names of LiteLLM's that the replacements read; missing ones leave the component off.
USED = (
    "calculate_img_tokens", "DEFAULT_IMAGE_TOKEN_COUNT", "TIKTOKEN_ENCODE_CHUNK_SIZE_CHARS",
    "TOKEN_COUNTER_MAX_EXACT_CHARS", "openai_tokenizer_encoding_name", "uses_legacy_message_accounting",
    "_format_function_definitions",
)


def _check_litellm(m: _LiteLLM) -> None:
    """Declines, naming them, when LiteLLM's functions do not look as the replacements expect."""
    problems = [f"token_counter.{name} missing" for name in USED if not hasattr(m.core, name)]
    problems += [
        f"utils.{name} missing"
        for name in ("huggingface_tokenizer_kind", "convert_list_message_to_dict")
        if not hasattr(m.utils, name)
    ]
    for owner, expected in (
        (m.core.token_counter, TOKEN_COUNTER_PARAMETERS),
        (m.utils.token_counter, TOKEN_COUNTER_PARAMETERS),
        (m.core._get_count_function, ("model", "custom_tokenizer")),
    ):
        found = tuple(inspect.signature(owner).parameters)
        if found != expected:
            problems.append(f"{owner.__module__}.{owner.__name__}{found} is not {expected}")
    if problems:
        raise Decline(f"LiteLLM does not match 1.106: {'; '.join(problems)}")


def install(c: Component) -> None:
    m = _lite()
    # litellm.token_counter (utils) checks litellm.disable_token_counter and calls the core
    # function through get_token_counter_new(): patching the core one serves both, and a call
    # LiteLLM's own function takes back runs the accelerated path once, not twice.
    for owner, attribute, accelerated in (
        (m.core, "token_counter", token_counter),
        (m.core, "_get_count_function", get_count_function),
    ):
        if not c.patch(owner, attribute, accelerated):
            raise Decline(f"{owner.__name__}.{attribute} is missing in this LiteLLM")


def _count_batch(model: Any, texts: List[str]) -> List[int]:
    """One text at a time through `litellm.token_counter` (what the batch must equal)."""
    import litellm

    return [litellm.token_counter(model=model, text=text) for text in texts]


def _count_batch_native(model: Any, texts: List[str]) -> List[int]:
    m = _lite()
    if m.litellm.disable_token_counter is True:
        return [0] * len(texts)
    return m.plan(model, None).counter.count_batch(texts)


def install_batch(c: Component) -> None:
    _lite()
    c.patch(sys.modules[__name__], "_count_batch", _count_batch_native)


def count_tokens_batch(model: Optional[str], texts: Sequence[str]) -> List[int]:
    """`[litellm.token_counter(model=model, text=t) for t in texts]`: the same integers,
    counted on every core at once (Rust threads, GIL released) when the model counts with a
    tiktoken encoding and FAST_LITELLM_BATCH_TOKEN_COUNTING is on; one at a time otherwise."""
    if isinstance(texts, str):
        raise TypeError("count_tokens_batch: texts must be a sequence of str, not one str")
    texts = list(texts)
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"count_tokens_batch: texts[{index}] is {type(text).__name__}, not str")
    return _count_batch(model, texts)


def preload(encodings: Sequence[str] = ("cl100k_base", "o200k_base")) -> None:
    """Loads these encoders in this process now rather than on its first count. In a gunicorn
    master before it forks, the workers then share one copy (pages nobody writes to) instead
    of each building its own (README, Token counting)."""
    for name in encodings:
        _native.TokenCounter(name).preload()
