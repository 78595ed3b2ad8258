"""Chat templates: Hugging Face's template environment (loop controls, `{% generation %}`, tojson,
strftime_now, raise_exception), compiled once when the formatter is made; a template that cannot
compile is one line at start in every mode; a model without a template chats in ChatML in the terminal
chat and in the server alike. Unit tests first, then the real executable."""

from __future__ import annotations

import datetime
import re
from pathlib import Path

import httpx
import openai
import pytest
from llmpack.runtime import messages
from llmpack.runtime.formats import chat_template
from llmpack.runtime.formats.chat_template import ChatFormatter, TemplateError, formatter_for
from llmpack.runtime.flags.settings import Settings
from llmpack.runtime.server.state import EngineHolder
from support.apps import app_for
from support.commands import build_bundle, error_line, one_error_line, run
from support.server_fixtures import running_server
from support.tiny_model import write_tiny_gguf

# Modelled on Command-R7B's template: the system message found by a loop that breaks, skipped by a
# loop that continues, tools as indented JSON, and the assistant's text inside {% generation %}.
COMMAND_R_STYLE = """{{ bos_token }}
{%- set preamble = namespace(text="You are a helpful assistant.") %}
{%- for message in messages %}
    {%- if message['role'] == 'system' %}
        {%- set preamble.text = message['content'] %}
        {%- break %}
    {%- endif %}
{%- endfor %}
<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|># System Preamble
{{ preamble.text }}
{% if tools %}
## Available Tools
{{ tools | tojson(indent=4) }}
{% endif %}
<|END_OF_TURN_TOKEN|>
{%- for message in messages %}
    {%- if message['role'] == 'system' %}
        {%- continue %}
    {%- elif message['role'] == 'user' %}
<|START_OF_TURN_TOKEN|><|USER_TOKEN|>{{ message['content'] }}<|END_OF_TURN_TOKEN|>
    {%- elif message['role'] == 'assistant' %}
<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>{% generation %}<|START_RESPONSE|>{{ message['content'] }}<|END_RESPONSE|>{% endgeneration %}<|END_OF_TURN_TOKEN|>
    {%- else %}
        {{- raise_exception('unknown role ' + message['role']) }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|><|START_RESPONSE|>
{%- endif %}
"""

CONVERSATION = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Année?"}]
RENDERED = ("<s><|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|># System Preamble\nBe brief.\n<|END_OF_TURN_TOKEN|>"
            "<|START_OF_TURN_TOKEN|><|USER_TOKEN|>Hi<|END_OF_TURN_TOKEN|>"
            "<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|><|START_RESPONSE|>Hello!<|END_RESPONSE|><|END_OF_TURN_TOKEN|>"
            "<|START_OF_TURN_TOKEN|><|USER_TOKEN|>Année?<|END_OF_TURN_TOKEN|>"
            "<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|><|START_RESPONSE|>")
BROKEN = "{% for %}"


# -- the template environment ------------------------------------------------------------------------

def test_a_command_r_style_template_with_generation_break_and_continue_renders() -> None:
    formatter = formatter_for(COMMAND_R_STYLE, "<s>", "</s>", None)
    assert formatter.render(CONVERSATION) == RENDERED
    without_system = formatter.render([{"role": "user", "content": "Hi"}], add_generation_prompt=False)
    assert without_system == ("<s><|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|># System Preamble\nYou are a helpful "
                              "assistant.\n<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|USER_TOKEN|>Hi<|END_OF_TURN_TOKEN|>")


def test_tojson_keeps_text_as_written_and_takes_indent_as_transformers_does() -> None:
    formatter = ChatFormatter("{{ messages | tojson }}|{{ messages[0] | tojson(indent=2) }}")
    rendered = formatter.render([{"role": "user", "content": "météo <b> & 'x'"}])
    # Jinja's own tojson would write \\u00e9 and \\u003c: a model was trained on the text itself.
    assert rendered == ('[{"role": "user", "content": "météo <b> & \'x\'"}]|'
                        '{\n  "role": "user",\n  "content": "météo <b> & \'x\'"\n}')


def test_strftime_now_trim_blocks_and_lstrip_blocks() -> None:
    formatter = ChatFormatter("{% for m in messages %}\n    {% if m['role'] == 'user' %}\n[{{ m['content'] }}]\n"
                              "    {% endif %}\n{% endfor %}{{ strftime_now('%Y') }}")
    year = datetime.datetime.now().year
    assert formatter.render([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]) in (
        f"[a]\n[b]\n{year}", f"[a]\n[b]\n{year + 1}")


def test_raise_exception_on_a_system_message_still_folds_it_into_the_first_turn() -> None:
    gemma = formatter_for(None, "<bos>", "", "gemma")
    refusing = ChatFormatter("{% if messages[0]['role'] == 'system' %}{{ raise_exception('no system') }}{% endif %}"
                             + gemma.template, "<bos>")
    assert refusing.render([{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]) == \
        "<bos><start_of_turn>user\nS\n\nU<end_of_turn>\n<start_of_turn>model\n"
    never = ChatFormatter("{{ raise_exception('roles must alternate') }}")
    with pytest.raises(TemplateError, match="rejected the conversation: roles must alternate"):
        never.render([{"role": "user", "content": "U"}])


def test_the_template_is_compiled_once_when_the_formatter_is_made(monkeypatch) -> None:
    compiled: list[str] = []
    real = chat_template.compile_template

    def counting(template: str, source: str):
        compiled.append(template)
        return real(template, source)

    monkeypatch.setattr(chat_template, "compile_template", counting)
    formatter = formatter_for(COMMAND_R_STYLE, "<s>", "</s>", None)
    for _ in range(3):
        assert formatter.render(CONVERSATION) == RENDERED
    assert compiled == [COMMAND_R_STYLE]


@pytest.mark.parametrize("gguf_template, override, source", [
    (None, BROKEN, "--chat-template"),
    (BROKEN, None, "the model's chat template"),
    ("{{ messages[0]['content'] }", None, "the model's chat template"),
    ("{% generation %}unclosed", None, "the model's chat template"),
])
def test_a_template_that_does_not_compile_fails_when_the_formatter_is_made(gguf_template, override, source) -> None:
    with pytest.raises(TemplateError) as failed:
        formatter_for(gguf_template, "", "", override)
    text = str(failed.value)
    prefix = messages.CHAT_TEMPLATE_INVALID.split("{reason}")[0].format(source=source)
    assert text.startswith(prefix) and "\n" not in text, text


def test_a_template_that_fails_while_rendering_is_a_template_error_not_a_crash() -> None:
    formatter = ChatFormatter("{{ messages[0]['content'] + 1 }}")
    with pytest.raises(TemplateError, match="the chat template failed: TypeError"):
        formatter.render([{"role": "user", "content": "x"}])


# -- the server, in-process (a fake engine): the formatter compiled at start is the one used ---------

class TemplatedEngine:
    bos_token, eos_token, model_name = "<s>", "</s>", "fake"
    n_ctx = n_ctx_train = 4096
    n_vocab, n_embd = 256, 4

    def __init__(self, template: str | None) -> None:
        self.chat_template = template


def test_the_server_uses_the_formatter_given_at_start_and_names_it_in_the_model_list() -> None:
    from fastapi.testclient import TestClient

    engine = TemplatedEngine(None)
    formatter = formatter_for(engine.chat_template, engine.bos_token, engine.eos_token, None)
    holder = EngineHolder.loaded(Settings(), engine, formatter)
    assert holder.formatter is formatter
    models = TestClient(app_for(Settings(), holder), base_url="http://localhost").get("/v1/models").json()
    assert models["data"][0]["chat_template"] == messages.TEMPLATE_FALLBACK
    with pytest.raises(TemplateError):
        EngineHolder.loaded(Settings(), TemplatedEngine(BROKEN))


# -- end to end: the real executable --------------------------------------------------------------------

QUIET = ["-t", "1", "--log-disable"]


@pytest.fixture(scope="module")
def command_r_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("command-r")
    gguf = write_tiny_gguf(folder / "command-r-style.gguf", chat_template=COMMAND_R_STYLE, name="command-r-style")
    return build_bundle(gguf, folder / "command-r-style.llmpack")


@pytest.fixture(scope="module")
def untemplated_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("untemplated")
    gguf = write_tiny_gguf(folder / "base.gguf", chat_template=None, name="base-model")
    return build_bundle(gguf, folder / "base.llmpack")


@pytest.mark.slow
def test_a_generation_tag_template_serves_chats_and_chats_in_the_terminal(command_r_bundle: Path,
                                                                          tmp_path: Path) -> None:
    with running_server(command_r_bundle, "-t", "1", log_path=tmp_path / "server.log") as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="-", max_retries=0, timeout=60,
                               _strict_response_validation=True)
        answer = client.chat.completions.create(model="any", messages=CONVERSATION, max_tokens=8, temperature=0)
        assert answer.choices[0].message.content is not None and answer.usage.completion_tokens > 0
        # The prompt is exactly the template's rendering, tokenized as the server tokenizes it.
        expected = httpx.post(server.url + "tokenize", json={"content": RENDERED, "parse_special": True},
                              timeout=30).json()["tokens"]
        assert answer.usage.prompt_tokens == len(expected)
        assert httpx.get(server.url + "v1/models", timeout=30).json()["data"][0]["chat_template"] == "the model's own"
        assert "Traceback" not in server.log

    chat = run([str(command_r_bundle), "--chat", "-n", "8", *QUIET], input="Hi\nAnd again\n", timeout=120)
    assert chat.returncode == 0 and chat.stderr == "", chat.stderr
    assert chat.stdout.strip()


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["--server", "--chat"])
def test_a_chat_template_that_does_not_compile_is_one_line_at_start(tiny_bundle: Path, mode: str) -> None:
    result = run([str(tiny_bundle), mode, "--chat-template", BROKEN, "--port", "0", "--nobrowser", "-t", "1"],
                 input="hi\n", timeout=120)
    line = one_error_line(result)
    assert result.returncode == 1
    assert line.startswith(error_line(messages.CHAT_TEMPLATE_INVALID.split("{reason}")[0].format(source="--chat-template"))), line


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["--server", "--chat"])
def test_a_model_whose_own_template_does_not_compile_stops_at_start(tmp_path: Path, mode: str) -> None:
    gguf = write_tiny_gguf(tmp_path / "broken.gguf", chat_template="{% if x %}never closed")
    bundle = build_bundle(gguf, tmp_path / "broken.llmpack")
    result = run([str(bundle), mode, "--port", "0", "--nobrowser", *QUIET], input="hi\n", timeout=120)
    line = one_error_line(result)
    assert result.returncode == 1
    assert line.startswith(error_line(messages.CHAT_TEMPLATE_INVALID.split("{reason}")[0].format(
        source="the model's chat template"))), line


@pytest.mark.slow
def test_a_model_without_a_template_chats_in_chatml_in_the_chat_and_the_server(untemplated_bundle: Path,
                                                                               tmp_path: Path) -> None:
    chat = run([str(untemplated_bundle), "--chat", "-n", "4", "-t", "1"], input="hello there\n/stats\n", timeout=120)
    assert chat.returncode == 0, chat.stderr
    assert messages.TEMPLATE_FALLBACK_WARNING in chat.stderr
    assert f"template: {messages.TEMPLATE_FALLBACK}" in chat.stderr  # the banner (a log line without a terminal)
    chat_prompt = int(re.findall(r"prompt: (\d+) tokens", chat.stderr)[-1])

    with running_server(untemplated_bundle, "-t", "1", log_path=tmp_path / "server.log") as server:
        assert messages.TEMPLATE_FALLBACK_WARNING in server.log
        entry = httpx.get(server.url + "v1/models", timeout=30).json()["data"][0]
        assert entry["chat_template"] == messages.TEMPLATE_FALLBACK
        answer = httpx.post(server.url + "v1/chat/completions", timeout=60, json={
            "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 4}).json()
        chatml = "<|im_start|>user\nhello there<|im_end|>\n<|im_start|>assistant\n"
        expected = httpx.post(server.url + "tokenize", json={"content": chatml, "add_special": True},
                              timeout=30).json()["tokens"]
    # The same message is the same prompt in both: ChatML, not raw text.
    assert answer["usage"]["prompt_tokens"] == chat_prompt == len(expected)


def test_templates_get_todays_date_as_llama_cpp_gives_it() -> None:
    """llama.cpp's templates context has `date_string` (and `datetime`): Llama 3.x's template prints
    today's date instead of its own fixed "26 Jul 2024"."""
    from support.templates import LLAMA31

    prompt = formatter_for(LLAMA31, "<|begin_of_text|>", "<|eot_id|>", None).render([{"role": "user", "content": "hi"}])
    assert f"Today Date: {datetime.date.today().strftime('%d %b %Y')}" in prompt
    dated = formatter_for("{{ datetime }}|{{ date_string }}", "", "", None).render([])
    assert dated == datetime.datetime.now().strftime("%b %d %Y|%d %b %Y")
