"""Generated `token_counter` calls for the parity suite: seeded, JSON-serialisable, and
covering every input kind LiteLLM's counter reads, on every release in the supported range.
A case is {"kwargs": {...}, "fast": bool} (and "needs": [parameter, ...] when it passes a
parameter some releases lack), "fast" meaning fast_litellm must count it in its one native call
(not decline it) wherever token_counter has every parameter it needs.
Markers the child turns into objects: {"__pydantic_message__": {...}} (litellm.Message) and
{"__tuple__": [...]} (a tuple)."""

import base64
import random
import struct
import zlib

# Models whose tokenizer is a tiktoken encoding, by LiteLLM's mapping: exact names, provider
# prefixes, Azure spellings, unknown names, the legacy-accounting one, and "" and None.
TIKTOKEN_MODELS = [
    "gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-5", "o3-mini", "gpt-4", "gpt-3.5-turbo", "gpt-3.5-turbo-0301",
    "gpt-35-turbo", "azure/gpt-41", "openai/gpt-4o", "azure/gpt-4o", "text-davinci-003", "unknown-model-xyz",
    "claude-3-5-sonnet-20240620", "gemini/gemini-2.0-flash", "", None,
    # Models with a chat-template tool section (1.104 when asked, 1.109 on always; grok 1.110 on).
    "qwen3.5-72b-instruct", "openrouter/qwen/qwen3.5-plus", "xai/grok-4-1-fast", "xai/grok-4.3",
]
# Counted by LiteLLM with a Hugging Face tokenizer (the bundled Anthropic one: no download).
HF_MODELS = ["claude-haiku-4-5"]
# Counted with tiktoken and a chat-template tool section in 1.104, with LiteLLM's bundled
# DeepSeek tokenizer from 1.109 on (so not "fast" on every release).
MAYBE_HF_MODELS = ["deepseek-v4", "deepseek/deepseek-chat"]

SCRIPTS = [
    "The quick brown fox jumps over the lazy dog. ",
    "Don't stop; we're here, they'll see, I've got it, you'd know, she's IT'S. ",
    "def f(x):\n    return {'a': [1, 2, 3], \"b\": x ** 2}  # comment\n",
    "fn main() { let v: Vec<u8> = vec![0xFF; 1024]; println!(\"{v:?}\"); }\n",
    "const x = async () => { await fetch(`/api/${id}`); };\r\n",
    "机器学习是人工智能的一个分支。它使计算机能够学习。",
    "日本語のテキストとカタカナ、ひらがな、漢字。",
    "مرحبا بالعالم، هذا نص عربي للاختبار.",
    "नमस्ते दुनिया, यह एक परीक्षण है।",
    "Привет, мир! Это тест на русском языке.",
    "한국어 텍스트 테스트입니다.",
    "Emoji: 👋🏽 👨‍👩‍👧‍👦 🏳️‍🌈 🤖✨🔥 ",
    "Ünïcödé àccénts: naïve café résumé Ærøskøbing ",
    "Numbers 1234567890 3.14159 1e-9 0x1F ",
    "<|endoftext|> <|fim_prefix|><|fim_middle|><|fim_suffix|> <|im_start|>user<|im_end|> <|endofprompt|> ",
    "\t\t  \n\n\n   \r\n \u00a0\u2003 ",
    "Combining: e\u0301 a\u0308 \u1100\u1161\u11a8 ",
]


def _text(rng: random.Random, max_len: int = 400) -> str:
    kind = rng.random()
    if kind < 0.08:
        return rng.choice(["a", " ", "\n", "!", "é", "字", "🙂", "ab", "\t"]) * rng.randint(1, 3000)
    if kind < 0.13:
        return "".join(chr(rng.randint(0x20, 0x2FFFF)) for _ in range(rng.randint(1, 200)))
    if kind < 0.16:
        return ""
    parts = []
    while sum(map(len, parts)) < rng.randint(1, max_len):
        piece = rng.choice(SCRIPTS)
        if rng.random() < 0.3:
            piece = piece[rng.randint(0, len(piece) - 1):]
        parts.append(piece)
    return "".join(parts)


def _edge_text(rng: random.Random) -> str:
    """Lengths near and across the 1024-character chunk edges, with multi-byte characters and
    words straddling them."""
    target = rng.choice([1023, 1024, 1025, 2047, 2048, 2049, 3071, 3072, 3073, 5000])
    filler = rng.choice(["word ", "é", "字字 ", "🙂", "a", " ", "x\n", "<|endoftext|>"])
    text = (filler * (target // len(filler) + 1))[:target]
    if rng.random() < 0.5:
        cut = rng.randint(0, len(text))
        text = text[:cut] + rng.choice(SCRIPTS) + text[cut:]
        text = text[:target]
    return text


def _png(width: int, height: int) -> str:
    raw = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + raw
    data = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(raw)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    return "data:image/png;base64," + base64.b64encode(data).decode()


def _content_part(rng: random.Random, fast: list) -> object:
    r = rng.random()
    if r < 0.45:
        return {"type": "text", "text": _text(rng)}
    if r < 0.55:
        return _text(rng, 80)
    if r < 0.7:
        detail = rng.choice(["low", "auto", None, "high"])
        url = rng.choice(["https://example.invalid/cat.png", _png(rng.randint(1, 4000), rng.randint(1, 4000))])
        spec = {"url": url} if detail is None else {"url": url, "detail": detail}
        if detail == "high":
            spec["url"] = _png(rng.randint(1, 4000), rng.randint(1, 4000))  # never a URL to fetch
            fast.append(False)
        return {"type": "image_url", "image_url": rng.choice([spec, spec["url"]]) if detail != "high" else spec}
    if r < 0.78:
        # 1.109 on counts a falsy thinking (None, 0, ...) as nothing, 1.106 as str() of it.
        thinking = _text(rng, 100) if rng.random() < 0.8 else rng.choice([None, 0, False, "", 7])
        return {"type": rng.choice(["thinking", "redacted_thinking"]), "thinking": thinking, "signature": "sig"}
    if r < 0.82:
        return {"type": "tool_reference", "tool_name": rng.choice(["get_weather", "", None, 7])}
    if r < 0.86:
        fast.append(False)
        return {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": _text(rng)},
                "title": rng.choice([None, "A title"])}
    if r < 0.9:
        # Shapes LiteLLM refuses (counted as default_token_count when given, else an error).
        fast.append(False)
        return rng.choice([{"type": "audio", "x": 1}, {"text": "no type"}, {"type": "image_url", "image_url": {"detail": "low"}},
                           {"type": "image_url", "image_url": {"url": "u", "detail": "ultra"}},
                           {"type": "image_url", "image_url": "   "}, [1, 2]])
    return {"type": "text", "text": rng.choice([5, None, 3.5, ["nested"], 0, False, [], {}, "", 0.0])}


def _tool_call(rng: random.Random) -> dict:
    arguments = rng.choice(['{"city": "Paris", "unit": "celsius"}', _text(rng, 60), {"city": "Paris"}, None])
    function = {"name": "get_weather", "arguments": arguments}
    if arguments is None:
        del function["arguments"]
    return {"id": f"call_{rng.randint(0, 999)}", "type": "function", "function": function}


def _message(rng: random.Random, fast: list) -> dict:
    role = rng.choice(["system", "user", "user", "assistant", "tool", "developer"])
    message: dict = {"role": role}
    r = rng.random()
    if r < 0.55:
        message["content"] = _text(rng)
    elif r < 0.8:
        message["content"] = [_content_part(rng, fast) for _ in range(rng.randint(0, 4))]
    elif r < 0.85:
        message["content"] = None
    elif r < 0.88:
        message["content"] = {"__tuple__": [_text(rng, 50)]}  # a tuple: LiteLLM skips it
    else:
        message["content"] = _edge_text(rng)
    if rng.random() < 0.15:
        message["name"] = rng.choice(["alice", "bob_the_builder", "名前", ""])
    if role == "assistant" and rng.random() < 0.4:
        message["tool_calls"] = [_tool_call(rng) for _ in range(rng.randint(1, 3))]
    if role == "assistant" and rng.random() < 0.1:
        message["function_call"] = {"name": "f", "arguments": rng.choice(['{"a": 1}', _text(rng, 40)])}
    if role == "tool":
        message["tool_call_id"] = f"call_{rng.randint(0, 999)}"
    if rng.random() < 0.1:
        message["cache_control"] = {"type": "ephemeral"}
    if rng.random() < 0.05:
        message["weight"] = rng.choice([1, 0.5, True])
    if rng.random() < 0.06:
        # Compaction summaries, counted from 1.109 on (a str is counted as any str value).
        message["provider_specific_fields"] = rng.choice([
            {"compaction_blocks": [{"type": "compaction", "content": _text(rng, 200)}, {"type": "other", "content": "x"},
                                   "not a block", {"type": "compaction", "content": ""}]},
            {"compaction_blocks": "not a list"}, {}, None, _text(rng, 40), {"other": 1},
        ])
    if rng.random() < 0.02:
        fast.append(False)
        message["tool_calls"] = rng.choice(["not a list", [{"no_function": 1}]])
    return message


def _tools(rng: random.Random) -> list:
    tools = []
    for i in range(rng.randint(1, 3)):
        style = rng.random()
        params = {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": rng.choice(["The city", ""])},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "opts": {"type": "object", "properties": {"x": {"type": "number"}, "y": {"type": "boolean"}}},
                "any": {},
                "nothing": {"type": "null"},
            },
            "required": rng.choice([["city"], [], ["city", "days"]]),
        }
        if rng.random() < 0.2:
            params = {"type": "object", "properties": {}}
        desc = rng.choice(["Get the weather", None, _text(rng, 60)])
        if style < 0.7:
            function = {"name": f"tool_{i}", "description": desc, "parameters": params}
            if rng.random() < 0.3:
                function["strict"] = rng.choice([True, False])  # grok's template renders only True
            tools.append({"type": "function", "function": function})
        elif style < 0.85:
            tools.append({"name": f"anthropic_{i}", "description": desc, "input_schema": params})
        else:
            tools.append({"function_declarations": [{"name": f"gemini_{i}", "description": desc, "parameters": params}]})
    return tools


def _messages_case(rng: random.Random, model: object, fast: list) -> dict:
    messages = [_message(rng, fast) for _ in range(rng.randint(0, 8))]
    kwargs: dict = {"model": model, "messages": messages}
    if rng.random() < 0.3:
        kwargs["tools"] = _tools(rng)
    if rng.random() < 0.25:
        kwargs["tool_choice"] = rng.choice(["none", "auto", "required", {"type": "function", "function": {"name": "tool_0"}}])
    if rng.random() < 0.02:
        kwargs["tool_choice"] = {"type": "function"}  # LiteLLM raises KeyError
        fast.append(False)
    if rng.random() < 0.02:
        # Counted from 1.109 on; a KeyError before.
        kwargs["tool_choice"] = rng.choice([{"type": "none"}, {"name": "tool_0"}])
        fast.append(False)
    if rng.random() < 0.12:
        kwargs["chat_template_tools"] = rng.choice([True, True, False])  # a parameter in 1.104 only
    if rng.random() < 0.2:
        kwargs["count_response_tokens"] = rng.choice([True, None, False])
    if rng.random() < 0.3:
        kwargs["use_default_image_token_count"] = rng.choice([True, False, None])
    if rng.random() < 0.2:
        kwargs["default_token_count"] = rng.choice([0, 17, None])
    if rng.random() < 0.05:
        kwargs["messages"] = {"__tuple__": messages}
    if rng.random() < 0.05:
        kwargs["messages"] = [
            {"__pydantic_message__": {"role": m["role"], "content": m["content"]}}
            for m in messages
            if m["role"] in ("user", "assistant", "system") and isinstance(m.get("content"), str)
        ]
    return kwargs


def cases(seed: int, n: int) -> list:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        fast: list = []
        model = rng.choice(TIKTOKEN_MODELS)
        r = rng.random()
        if r < 0.3:
            kwargs = {"model": model, "text": rng.choice([_text(rng, 2000), _edge_text(rng)])}
        elif r < 0.34:
            kwargs = {"model": model, "text": [_text(rng, 50), 7, _text(rng, 50), None]}
        elif r < 0.36:
            # Refused by LiteLLM: text with messages or tools, neither, a non-str text.
            kwargs = rng.choice([{"model": model, "text": "a", "messages": []}, {"model": model, "text": "a", "tools": _tools(rng)},
                                 {"model": model}, {"model": model, "text": 12}])
            fast.append(False)
        else:
            kwargs = _messages_case(rng, model, fast)
        if rng.random() < 0.05:
            kwargs["custom_tokenizer"] = {"type": "openai_tokenizer", "tokenizer": None}
        if rng.random() < 0.04:
            kwargs["model"] = rng.choice(HF_MODELS)
            fast.append(False)
        elif rng.random() < 0.03 and "messages" in kwargs:
            kwargs["model"] = rng.choice(MAYBE_HF_MODELS)
            fast.append(False)
        case = {"id": i, "kwargs": kwargs, "fast": not fast}
        if "chat_template_tools" in kwargs:
            case["needs"] = ["chat_template_tools"]  # "fast" only where token_counter has it
        out.append(case)
    return out
