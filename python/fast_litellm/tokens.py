"""token_counting: LiteLLM's token counts, computed in Rust, the same integers.

What LiteLLM does
    `litellm.token_counter` (litellm/utils.py, the same as litellm_core_utils/token_counter.py
    `token_counter`) picks a tokenizer for the model on every call (`select_tokenizer`, then
    `openai_tokenizer_encoding_name`: cl100k_base for unknown names (and, before 1.109,
    provider-prefixed ones), o200k_base for gpt-4o / gpt-4.1 / gpt-5 ..., p50k_base for the
    davinci family), walks the
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
       the reply, the tool definitions and tool_choice are LiteLLM's own `_count_extra`,
       counting with the native counter.
    2. `_get_count_function`, which every other count of LiteLLM's goes through
       (`messages_reach_token_count`, documents, PDFs, Anthropic blocks, and the calls that 1.
       declines), returns the native counter for tiktoken encodings.
    Long texts are counted with the GIL released, so LiteLLM's counting pool
    (`offload_token_count`, 4 threads per event loop) counts in parallel. Encoders load on
    the first count in each process, not at import; `preload()` loads them now, so that
    processes forked afterwards (gunicorn workers) share the parent's copy.

LiteLLM releases (1.104 to 1.110, not 1.107; `Rules` and `_probe_rules` are the one place
that knows how they differ, read from the installed LiteLLM's shapes and its helpers' answers)
    The native walk follows 1.106's `_count_messages`; 1.105 and 1.108 count the same.
    1.104: `token_counter(chat_template_tools=True)` counts the tools (and no tool_choice) as
        the model's chat template renders them (deepseek-v4, qwen3.5): served, through
        LiteLLM's `chat_template_tool_section` and `_count_extra`.
    1.109, 1.110: that tool section is always used when the model has one (1.110 adds grok
        4.1/4.3, which count tool_choice); tool_choice also counts {"type": "none"} and
        {"name": ...}; a text or thinking block whose text is falsy (None, 0, []) counts
        nothing; an auto-detail inline image counts its high-detail tiles; a message's
        `provider_specific_fields` counts its compaction summaries: the native count is
        corrected by what LiteLLM's own helpers give for those parts. The encoding of a name
        reads `litellm.model_cost` and every listed name, so it is LiteLLM's choice on every
        call (5 to 30 microseconds) instead of a cached one.
    An unknown shape or answer leaves the component off with a WARNING naming it.

Declined (LiteLLM's own function runs, counted as `declined`)
    Models with a Hugging Face tokenizer (llama, cohere command-r, pre-3 claude; deepseek v3
    and v4 from 1.109) unless
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

import base64
import inspect
import logging
import struct
import sys
import zlib
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

from . import _native
from ._acceleration import Component, Decline
from ._compat import Shape, missing, problems, shape

__all__ = ["count_tokens_batch", "install", "install_batch", "preload"]

log = logging.getLogger("fast_litellm")

#: The most distinct model names whose plans are kept; past it the cache starts over (the
#: proxy's /utils/token_counter takes any name a client sends).
MAX_PLANS = 1024


# ---- how LiteLLM releases differ: the one place -------------------------------------------
#
# The native walk (`_native.TokenCounter.count_messages`) follows LiteLLM 1.106's
# `_count_messages`. Everything else is read from the LiteLLM that is installed: the shapes
# below, and `_probe_rules`, which asks LiteLLM's own helpers how they count a few tiny inputs.
# A shape or an answer that is none of the known ones leaves the component off with a WARNING.

TOKEN_COUNTER_PARAMETERS = (
    "model", "custom_tokenizer", "text", "messages", "count_response_tokens", "tools", "tool_choice",
    "use_default_image_token_count", "default_token_count",
)
#: `token_counter` (core and utils): "plain" (1.105 on), "chat_template_tools" (1.104: an
#: opt-in to count the tools as the model's chat template renders them).
TOKEN_COUNTER_VARIANTS = {
    "plain": TOKEN_COUNTER_PARAMETERS,
    "chat_template_tools": TOKEN_COUNTER_PARAMETERS + ("chat_template_tools",),
}
#: `_count_extra` (the reply, the tool definitions, tool_choice): "plain" (1.105 to 1.108),
#: "tool_section" (1.104, 1.109 on: the model's chat-template tool section, or None).
COUNT_EXTRA_VARIANTS = {
    "plain": ("count_function", "tools", "tool_choice", "includes_system_message"),
    "tool_section": ("count_function", "tools", "tool_choice", "includes_system_message", "tool_section"),
}
CONTENT_LIST_VARIANTS = (
    ("count_function", "content_list", "use_default_image_token_count", "default_token_count"),
    ("count_function", "content_list", "use_default_image_token_count", "default_token_count", "pdf_pricing"),
)
#: Names of LiteLLM's that the replacements read; missing ones leave the component off.
USED = (
    "calculate_img_tokens", "DEFAULT_IMAGE_TOKEN_COUNT", "TIKTOKEN_ENCODE_CHUNK_SIZE_CHARS",
    "TOKEN_COUNTER_MAX_EXACT_CHARS", "openai_tokenizer_encoding_name", "uses_legacy_message_accounting",
    "_count_extra", "_count_content_list", "EXTRAPOLATION_SAMPLES",
)
#: LiteLLM constants the native counter has built in.
NATIVE_CONSTANTS = {"EXTRAPOLATION_SAMPLES": 16}
UTILS_USED = ("huggingface_tokenizer_kind", "convert_list_message_to_dict")


@dataclass(frozen=True)
class Rules:
    """Where the installed LiteLLM counts otherwise than 1.106 (the native walk's rules)."""

    #: Where a chat-template tool section comes from: None (1.105 to 1.108: never), "opt_in"
    #: (1.104: `chat_template_tools=True`), "always" (1.109 on: whenever the model has one).
    tool_sections: Optional[str]
    #: A text or thinking block whose text is None, 0, False, [] ... counts nothing; 1.106
    #: counts str() of it ("None": 1 token). 1.109 on.
    falsy_text_uncounted: bool
    #: An auto-detail image given inline (a data: URL) is counted by its size in high-detail
    #: tiles; 1.106 counts every auto-detail image as a low-detail one. 1.109 on.
    auto_images_read_inline: bool
    #: A message's `provider_specific_fields` counts its compaction summaries. 1.109 on.
    counts_compaction: bool
    #: The encoding of a name that is in none of LiteLLM's model lists is not that of
    #: gpt-3.5-turbo: the choice then reads more than the name and its list memberships
    #: (`litellm.model_cost`, the other names listed), so it is asked of LiteLLM on every call
    #: rather than cached. 1.109 on.
    encoding_reads_more_than_lists: bool

    @property
    def adjusts_walk(self) -> bool:
        return self.falsy_text_uncounted or self.auto_images_read_inline or self.counts_compaction


#: The block types whose text `_count_content_list` counts, and the field it reads.
_TEXT_FIELDS = {"text": "text", "thinking": "thinking", "redacted_thinking": "thinking"}
#: A name in none of LiteLLM's lists, named like a newer OpenAI release.
_UNLISTED_MODEL = "fast-litellm-probe/gpt-9.9"


def _png_data_url(width: int, height: int) -> str:
    """A PNG's signature and IHDR chunk: enough for LiteLLM to read the image's size."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + header
    data = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(header)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    return "data:image/png;base64," + base64.b64encode(data).decode()


def _probe_rules(core: Any, utils: Any, base_image_tokens: int) -> Rules:
    """The installed LiteLLM's `Rules`; Decline, naming what changed, when its shapes or its
    answers are none of those the replacements were written against."""
    counters = [Shape(core, "token_counter", TOKEN_COUNTER_VARIANTS), Shape(utils, "token_counter", TOKEN_COUNTER_VARIANTS)]
    count_extra = Shape(core, "_count_extra", COUNT_EXTRA_VARIANTS)
    shapes = counters + [
        count_extra,
        shape(core, "_get_count_function", ("model", "custom_tokenizer")),
        shape(core, "calculate_img_tokens", ("data", "mode", "base_tokens", "use_default_image_token_count")),
        shape(core, "_count_content_list", *CONTENT_LIST_VARIANTS),
    ]
    if count_extra.variant() == "tool_section":
        shapes.append(shape(core, "chat_template_tool_section", ("model",)))
    if hasattr(core, "_compaction_summaries"):
        shapes.append(shape(core, "_compaction_summaries", ("provider_specific_fields",)))
    found = problems(shapes, [(core, name) for name in USED] + [(utils, name) for name in UTILS_USED])
    if found:
        raise Decline(f"LiteLLM does not match: {'; '.join(found)}")

    counter_variant, extra_variant = counters[0].variant(), count_extra.variant()
    tool_sections = {
        ("plain", "plain"): None, ("chat_template_tools", "tool_section"): "opt_in", ("plain", "tool_section"): "always",
    }.get((counter_variant, extra_variant), "?")  # type: ignore[arg-type]
    if counters[1].variant() != counter_variant or tool_sections == "?":
        raise Decline(
            f"LiteLLM does not match: token_counter is {counter_variant!r} in core, {counters[1].variant()!r} in "
            f"utils, with _count_extra {extra_variant!r}: not a combination served here"
        )

    # LiteLLM's own helpers on inputs whose count tells one rule from the other.
    try:
        falsy = core._count_content_list(len, [{"type": "text", "text": None}, {"type": "thinking", "thinking": None}], False, None)
        image = core.calculate_img_tokens(data=_png_data_url(2048, 2048), mode="auto")
        unlisted = core.openai_tokenizer_encoding_name(_UNLISTED_MODEL)
        gpt_35 = core.openai_tokenizer_encoding_name("gpt-3.5-turbo")
    except Exception as error:  # noqa: BLE001 - a helper that no longer takes these inputs
        raise Decline(f"LiteLLM does not match: its counting helpers raise {error!r} on probe inputs") from None
    odd = [
        f"token_counter.{name} is {getattr(core, name)!r}, not {value!r}"
        for name, value in NATIVE_CONSTANTS.items()
        if getattr(core, name) != value
    ]
    if falsy not in (0, 2 * len("None")):
        odd.append(f"_count_content_list counts a text and a thinking block of None as {falsy!r}, neither 8 nor 0")
    if type(image) is not int:
        odd.append(f"calculate_img_tokens gives {image!r} for an auto-detail inline image")
    if odd:
        raise Decline(f"LiteLLM does not match: {'; '.join(odd)}")
    return Rules(
        tool_sections=tool_sections,
        falsy_text_uncounted=falsy == 0,
        auto_images_read_inline=image != base_image_tokens,
        counts_compaction=hasattr(core, "_compaction_summaries"),
        encoding_reads_more_than_lists=unlisted != gpt_35,
    )


# ---- the counting --------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """How LiteLLM counts for one model: the encoding, the per-message and per-name tokens,
    and the model's chat-template tool section (where LiteLLM has those)."""

    counter: _native.TokenCounter
    per_message: int
    per_name: int
    tool_section: Any = None


class _LiteLLM:
    """The LiteLLM names the counting follows, looked up once at install."""

    def __init__(self) -> None:
        import litellm
        import litellm.utils as utils
        from litellm.litellm_core_utils import token_counter as core

        # Any: LiteLLM's modules are read by name, checked at install (_probe_rules).
        self.litellm: Any = litellm
        self.utils: Any = utils
        self.core: Any = core
        found = missing([(core, "calculate_img_tokens")])
        if found:
            raise Decline(f"LiteLLM does not match: {'; '.join(found)}")
        base_tokens = inspect.signature(core.calculate_img_tokens).parameters["base_tokens"].default
        self.base_image_tokens = int(base_tokens)  # a default argument: fixed once defined
        self.rules = _probe_rules(core, utils, self.base_image_tokens)
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

    def _encoding_name(self, model: Optional[str]) -> str:
        # 1.109 on asks for `model or ""`; before, the name as given (None and "" give the same).
        name: str = self.core.openai_tokenizer_encoding_name(
            (model or "") if self.rules.encoding_reads_more_than_lists else model
        )
        return name

    def _make_plan(self, model: Optional[str], openai_tokenizer: bool, encoding: Optional[str]) -> Optional[Plan]:
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
            if encoding is None:
                encoding = self._encoding_name(model)
        counter = self.counter(encoding)
        if counter is None:
            return None
        legacy = core.uses_legacy_message_accounting(model)
        section = core.chat_template_tool_section(model) if self.rules.tool_sections else None
        return Plan(counter, 4 if legacy else 3, -1 if legacy else 1, section)

    def plan(self, model: Any, custom_tokenizer: Any) -> Plan:
        """The plan LiteLLM would follow for this call; Decline when it is not a tiktoken one.

        LiteLLM's choice reads the model name, whether that name is in each of its four model
        lists, and `disable_hf_tokenizer_download`: all of it is the cache key, so a model
        added to (or removed from) a list at run time is planned afresh. Where the encoding
        reads more than that (1.109 on), LiteLLM's choice of it is part of the key."""
        if model is not None and type(model) is not str:
            raise Decline("model name is not a str")
        if custom_tokenizer is None:
            openai_tokenizer = False
        elif type(custom_tokenizer) is dict and custom_tokenizer and custom_tokenizer.get("type") == "openai_tokenizer":
            openai_tokenizer = True  # LiteLLM then counts with the model's own encoding
        else:
            raise Decline("custom tokenizer")
        lt = self.litellm
        encoding = None
        if self.rules.encoding_reads_more_than_lists and (model is not None or openai_tokenizer):
            try:
                encoding = self._encoding_name(model)
            except Exception as error:  # noqa: BLE001 - LiteLLM's own function then raises it
                raise Decline(f"LiteLLM's encoding choice raised: {error!r}") from None
        key = (
            model, openai_tokenizer, lt.disable_hf_tokenizer_download, model in lt.open_ai_chat_completion_models,
            model in lt.azure_llms, model in lt.cohere_models, model in lt.anthropic_models, encoding,
        )
        plan = self.plans.get(key, _UNKNOWN)
        if plan is _UNKNOWN:
            if len(self.plans) >= MAX_PLANS:
                self.plans.clear()
            plan = self.plans[key] = self._make_plan(model, openai_tokenizer, encoding)
        if plan is None:
            raise Decline(f"model {model!r} does not count with a tiktoken encoding served here")
        return plan  # type: ignore[return-value]


#: A model not planned yet (None is a plan: "LiteLLM counts it itself").
_UNKNOWN = object()
#: `chat_template_tools` not given (the parameter exists in 1.104 only).
_ABSENT: Any = object()
_m: Optional[_LiteLLM] = None


def _lite() -> _LiteLLM:
    global _m
    if _m is None:
        _m = _LiteLLM()
    return _m


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
    chat_template_tools: Any = _ABSENT,
) -> int:
    """LiteLLM's `token_counter`, one native call for the usual shapes (see the module doc)."""
    m = _lite()
    if chat_template_tools is not _ABSENT and m.rules.tool_sections != "opt_in":
        raise Decline("chat_template_tools is not a parameter of this LiteLLM's token_counter")
    if m.litellm.disable_token_counter is True:
        return 0
    plan = m.plan(model, custom_tokenizer)
    # Exceptions from the caller's objects (their __bool__, __str__, model_dump, a tool schema
    # LiteLLM's formatter refuses) are not errors of this path: LiteLLM's own function then
    # raises them, or counts around them, itself.
    try:
        return _count(
            m, plan, text, messages, count_response_tokens, tools, tool_choice, use_default_image_token_count,
            chat_template_tools,
        )
    except (Decline, _native.TokenCountError):
        raise
    except Exception as error:  # noqa: BLE001 - see above
        raise Decline(f"LiteLLM handles these inputs itself: {error!r}") from None


def _count(
    m: _LiteLLM, plan: Plan, text: Any, messages: Any, count_response_tokens: Any, tools: Any, tool_choice: Any,
    use_default_image_token_count: Any, chat_template_tools: Any,
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
    rules = m.rules
    # The chat-template tool section, chosen (as LiteLLM does) before the messages are walked.
    if rules.tool_sections == "opt_in":
        section = plan.tool_section if chat_template_tools is not _ABSENT and chat_template_tools else None
    else:
        section = plan.tool_section
    use_default_images = bool(use_default_image_token_count)
    args = (plan.per_message, plan.per_name, use_default_images, int(m.core.DEFAULT_IMAGE_TOKEN_COUNT), m.base_image_tokens)
    counted = counter.count_messages(messages, *args)
    if counted is None:  # pydantic messages: LiteLLM's own conversion, then the same walk
        messages = m.utils.convert_list_message_to_dict(messages)
        counted = counter.count_messages(messages, *args)
    if counted is None:
        raise Decline("a message shape LiteLLM counts itself")
    tokens, includes_system = counted
    if rules.adjusts_walk:
        tokens += _walk_difference(m, counter, messages, use_default_images)
    if count_response_tokens is False:
        # LiteLLM's own: the reply's 3 tokens, the tool definitions and tool_choice.
        if rules.tool_sections is None:
            tokens += m.core._count_extra(counter.count, tools, tool_choice, includes_system)
        else:
            tokens += m.core._count_extra(counter.count, tools, tool_choice, includes_system, section)
    return tokens


def _walk_difference(m: _LiteLLM, counter: _native.TokenCounter, messages: Any, use_default_images: bool) -> int:
    """What this LiteLLM's `_count_messages` counts beyond the native walk's (1.106's) count
    of the same messages, which that walk has just read: exact dicts, lists and strs."""
    rules, core = m.rules, m.core
    difference = 0
    for message in messages:
        if rules.counts_compaction:
            fields = message.get("provider_specific_fields")
            if fields is not None and not isinstance(fields, str):  # a str is counted as one
                difference += sum(counter.count(summary) for summary in core._compaction_summaries(fields))
        content = message.get("content")
        if type(content) is not list:
            continue
        for part in content:
            if type(part) is not dict:
                continue  # a str: counted alike
            kind = part.get("type")
            if rules.falsy_text_uncounted and kind in _TEXT_FIELDS:
                field = _TEXT_FIELDS[kind]
                if field in part:
                    value = part[field]
                    if not isinstance(value, str) and not value:
                        difference -= counter.count(str(value))  # the walk counted str(value)
            elif rules.auto_images_read_inline and kind == "image_url" and not use_default_images:
                # The walk counted an auto-detail image as a low-detail one (base tokens).
                spec = part.get("image_url")
                if type(spec) is dict:
                    if spec.get("detail", "auto") != "auto":
                        continue
                    url = spec.get("url")
                else:
                    url = spec
                difference += core.calculate_img_tokens(data=url, mode="auto") - m.base_image_tokens
    return difference


def get_count_function(model: Any, custom_tokenizer: Any = None) -> Callable[[str], int]:
    """LiteLLM's `_get_count_function`: the native counter for a tiktoken encoding."""
    return _lite().plan(model, custom_tokenizer).counter.count


def _lite_for(c: Component) -> _LiteLLM:
    """`_lite()`, with a WARNING naming what changed when this LiteLLM is not one served here."""
    try:
        return _lite()
    except Decline as why:
        log.warning("fast_litellm: %s: %s", c.name, why)
        raise


def install(c: Component) -> None:
    m = _lite_for(c)
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
    _lite_for(c)
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
