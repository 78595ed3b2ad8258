"""llama.cpp's chat library through libllmpack-chat (runtime/formats/llama_chat.py): every template of the
vendored llama.cpp's models/templates/ renders, and the raw outputs of today's thinking models parse into
content, reasoning and tool calls, whole and streamed (tool-call arguments as they are generated).

The raw outputs are written per format (as llama.cpp's tests/test-chat.cpp writes them), so nothing here
depends on what a model would say on this CPU. The differential test against native llama-server is
bench/chat_formats.py (tests/test_chat_formats_native.py runs it)."""

from __future__ import annotations

import json
import os
import sys
import tarfile
from pathlib import Path

import pytest

from llmpack.runtime.formats import llama_chat
from llmpack.runtime.formats.llama_chat import ChatFormatError, LlamaChat

# The set-up's cache, read before the session's fixtures point LLMPACK_CACHE at the test cache.
SETUP_CACHE = Path(os.environ.get("LLMPACK_CACHE") or Path.home() / ".cache" / "llmpack")
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "The weather in a city",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                          "required": ["city"]}}}]
ASK = [{"role": "user", "content": "Weather in Paris?"}]
CONVERSATION = [
    {"role": "system", "content": "You are terse."}, *ASK,
    {"role": "assistant", "reasoning_content": "I should look.", "content": "", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "Sunny"}, {"role": "user", "content": "Thanks"}]
THOUGHT, CITY = "I should check the weather.", "Paris"
# A thought, then a call, in each family's own syntax (after the generation prompt).
OUTPUTS = {
    "Qwen-Qwen3-0.6B.jinja": f'<think>\n{THOUGHT}\n</think>\n\n<tool_call>\n{{"name": "get_weather", "arguments": {{"city": "{CITY}"}}}}\n</tool_call>',
    "openai-gpt-oss-120b.jinja": f'<|channel|>analysis<|message|>{THOUGHT}<|end|><|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{{"city": "{CITY}"}}<|call|>',
    "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja": f'{THOUGHT}</think>\n\n<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{{"city": "{CITY}"}}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>',
    "google-gemma-4-31B-it.jinja": f'<|channel>thought\n{THOUGHT}<channel|><|tool_call>call:get_weather{{city:<|"|>{CITY}<|"|>}}<tool_call|>',
    "moonshotai-Kimi-K2.jinja": f'<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>{{"city": "{CITY}"}}<|tool_call_end|><|tool_calls_section_end|>',
}

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="build/chat-shim.sh has no Windows recipe yet")


def test_set_up_built_the_chat_library() -> None:
    # Where build/chat-shim.sh has a recipe, a missing library is a failed set-up, never a skip.
    assert llama_chat.available(), "libllmpack-chat is missing: run make setup (build/chat-shim.sh)"


@pytest.fixture(scope="session")
def templates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """models/templates/ of the llama.cpp the engine was built from (the sdist the set-up kept)."""
    from importlib.metadata import version

    sdist = SETUP_CACHE / "sdist" / f"llama_cpp_python-{version('llama-cpp-python')}.tar.gz"
    assert sdist.is_file(), f"{sdist} is kept by build/chat-shim.sh (make setup)"
    with tarfile.open(sdist) as archive:
        return {Path(m.name).name: archive.extractfile(m).read().decode()
                for m in archive.getmembers() if "/vendor/llama.cpp/models/templates/" in m.name and m.name.endswith(".jinja")}


def test_every_template_renders_a_conversation_with_tools_calls_and_thinking(templates):
    assert len(templates) >= 70
    for name, text in sorted(templates.items()):
        chat = LlamaChat.from_template(text, "<s>", "</s>")
        for body in ({"messages": ASK}, {"messages": ASK, "chat_template_kwargs": {"enable_thinking": False}}):
            assert "Weather in Paris?" in chat.apply(body).prompt, name
        try:
            assert "Weather in Paris?" in chat.apply({"messages": CONVERSATION, "tools": TOOLS}).prompt, name
        except ChatFormatError as exc:  # the template's own refusal (as llama-server's: a 400), nothing else
            assert "Jinja Exception" in str(exc), (name, str(exc))


def _parse(chat: LlamaChat, raw: str, step: int | None) -> tuple[dict, list[dict]]:
    applied = chat.apply({"messages": ASK, "tools": TOOLS, "chat_template_kwargs": {"preserve_reasoning": True}})
    stream = applied.stream(streaming=step is not None)
    diffs = []
    if step:
        for i in range(0, len(raw), step):
            diffs += stream.feed(raw[i:i + step])
        diffs += stream.finish()
    else:
        diffs = stream.finish(raw)
    return stream.message, diffs


@pytest.mark.parametrize("name", sorted(OUTPUTS))
def test_thinking_and_tool_calls_parse_whole_and_streamed(templates, name):
    chat = LlamaChat.from_template(templates[name], "<s>", "</s>")
    raw = OUTPUTS[name]
    message, _ = _parse(chat, raw, None)
    assert [(c["name"], json.loads(c["arguments"])) for c in message["tool_calls"]] == [("get_weather", {"city": CITY})]
    if THOUGHT in raw:
        assert message["reasoning_content"].strip() == THOUGHT
    assert THOUGHT not in message["content"] and "get_weather" not in message["content"]
    streamed, diffs = _parse(chat, raw, 2)
    assert streamed["tool_calls"][0]["name"] == "get_weather"
    assert json.loads(streamed["tool_calls"][0]["arguments"]) == {"city": CITY}
    assert "".join(d.get("reasoning_content", "") for d in diffs) == streamed["reasoning_content"]
    headers = [d for d in diffs if d.get("name")]
    assert len(headers) == 1 and headers[0]["index"] == 0 and headers[0]["id"]  # id and name once, first
    fragments = [d["arguments"] for d in diffs if "arguments" in d]
    assert "".join(fragments) == streamed["tool_calls"][0]["arguments"]
    assert len(fragments) > 1, "arguments stream as they are generated, not in one piece at the end"


def test_thinking_off_and_effort_reach_the_template(templates):
    qwen = LlamaChat.from_template(templates["Qwen-Qwen3-0.6B.jinja"])
    assert qwen.supports_thinking
    on = qwen.apply({"messages": ASK}).prompt
    off = qwen.apply({"messages": ASK, "chat_template_kwargs": {"enable_thinking": False}}).prompt
    assert off != on and off.endswith("<think>\n\n</think>\n\n")
    assert qwen.apply({"messages": ASK, "reasoning_effort": "none"}).prompt == off
    oss = LlamaChat.from_template(templates["openai-gpt-oss-120b.jinja"])
    assert "Reasoning: low" in oss.apply({"messages": ASK, "reasoning_effort": "low"}).prompt


@pytest.mark.parametrize("body", [
    {"messages": "nope"}, {"messages": [{"role": "user"}]}, {"messages": [{"role": 3, "content": "x"}]},
    {"messages": ASK, "tools": [{"type": "function"}]}, {"messages": ASK, "tool_choice": "sometimes"},
    {"messages": ASK, "chat_template_kwargs": {"enable_thinking": "yes"}},
    {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
])
def test_hostile_requests_are_errors_not_crashes(templates, body):
    chat = LlamaChat.from_template(templates["Qwen-Qwen3-0.6B.jinja"])
    with pytest.raises(ChatFormatError):
        chat.apply(body)


def test_a_broken_template_is_one_error():
    with pytest.raises(ChatFormatError):
        LlamaChat.from_template("{% for %}")
