"""End to end: the rest of what OpenAI clients send to /v1/chat/completions and /v1/completions
(logit_bias, prefill, refused output-changing fields), base URLs without /v1, system_fingerprint and
cached prompt tokens, on the real executable with the official `openai` client."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest
from support.server_fixtures import ServerProcess, running_server
from support.tiny_model import _vocabulary

pytestmark = pytest.mark.slow

USER = [{"role": "user", "content": "hello there"}]
TOKENS = _vocabulary()[0]
CAT = TOKENS.index("\u2581cat")


@pytest.fixture(scope="module")
def server(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory):
    log = tmp_path_factory.mktemp("fields") / "server.log"
    # One sequence: a repeated request finds its prompt in that sequence's cache.
    with running_server(tiny_bundle, "-c", "512", "-np", "1", log_path=log) as running:
        yield running


@pytest.fixture()
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="-", max_retries=0, timeout=60,
                         _strict_response_validation=True)


def ids_of(token_bytes: list[int]) -> list[str]:
    """Every token id of the tiny vocabulary that spells these bytes (a byte token and a piece may)."""
    wanted = bytes(token_bytes)
    ids = []
    for i, token in enumerate(TOKENS):
        if token.startswith("<0x") and len(token) == 6:
            spelled = bytes([int(token[3:5], 16)])
        else:
            spelled = token.replace("\u2581", " ").encode()
        if spelled == wanted:
            ids.append(str(i))
    assert ids, token_bytes
    return ids


def first_token_bytes(client: openai.OpenAI, **extra) -> list[int]:
    answer = client.chat.completions.create(model="m", messages=USER, max_tokens=4, temperature=0, logprobs=True,
                                            **extra)
    return answer.choices[0].logprobs.content[0].bytes


def test_logit_bias_minus_100_bans_the_token_greedy_chose(client: openai.OpenAI) -> None:
    chosen = first_token_bytes(client)
    banned = first_token_bytes(client, logit_bias={token: -100 for token in ids_of(chosen)})
    assert banned != chosen
    assert first_token_bytes(client) == chosen  # nothing left behind for the next request


def test_logit_bias_plus_100_forces_a_token(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(model="m", messages=USER, max_tokens=4, temperature=0,
                                            logit_bias={str(CAT): 100})
    assert answer.choices[0].message.content == " cat" * 4
    streamed = client.chat.completions.create(model="m", messages=USER, max_tokens=3, temperature=0.9, seed=3,
                                              logit_bias={str(CAT): 100}, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == " cat" * 3


def test_logit_bias_on_text_completions(client: openai.OpenAI) -> None:
    forced = client.completions.create(model="m", prompt="the dog", max_tokens=3, temperature=0,
                                       logit_bias={str(CAT): 100})
    assert forced.choices[0].text == " cat" * 3
    # The chat's prompt as raw text: the same first token as the chat's greedy answer.
    chosen = first_token_bytes(client)
    prompt = "<start_of_turn>user\nhello there<end_of_turn>\n<start_of_turn>model\n"
    plain = client.completions.create(model="m", prompt=prompt, max_tokens=1, temperature=0, logprobs=0)
    assert plain.choices[0].logprobs.tokens[0] == bytes(chosen).decode()
    banned = client.completions.create(model="m", prompt=prompt, max_tokens=1, temperature=0, logprobs=0,
                                       logit_bias={token: -100 for token in ids_of(chosen)})
    assert banned.choices[0].logprobs.tokens[0] != bytes(chosen).decode()


@pytest.mark.parametrize("bias, param", [({"999999": 5}, "logit_bias.999999"), ({"-1": 5}, "logit_bias.-1"),
                                         ({"cat": 5}, "logit_bias"), ({str(CAT): 101}, f"logit_bias.{CAT}")])
def test_bad_logit_bias_is_a_400_naming_it(client: openai.OpenAI, bias: dict, param: str) -> None:
    for call in (lambda: client.chat.completions.create(model="m", messages=USER, max_tokens=1, logit_bias=bias),
                 lambda: client.completions.create(model="m", prompt="hi", max_tokens=1, logit_bias=bias)):
        with pytest.raises(openai.BadRequestError) as refused:
            call()
        assert refused.value.status_code == 400 and refused.value.body["param"] == param


@pytest.mark.parametrize("field, value", [
    ("audio", {"voice": "alloy", "format": "wav"}), ("modalities", ["text", "audio"]),
    ("functions", [{"name": "f", "parameters": {"type": "object"}}]), ("function_call", "auto"),
    ("web_search_options", {}), ("reasoning_effort", 7), ("verbosity", "low"),
])
def test_output_changing_fields_it_cannot_honour_are_refused(client: openai.OpenAI, field: str, value) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="m", messages=USER, max_tokens=1, extra_body={field: value})
    assert refused.value.body["param"] == field


def test_metadata_fields_are_accepted(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(model="m", messages=USER, max_tokens=2, user="u", metadata={"a": "b"},
                                            store=False, service_tier="auto", modalities=["text"],
                                            prediction={"type": "content", "content": "x"})
    assert answer.choices[0].message.content is not None


PREFILL = [*USER, {"role": "assistant", "content": "the cat"}]
# The tiny model's template (Gemma 2's), rendered by hand up to the assistant's text, left open.
OPEN_TURN = "<start_of_turn>user\nhello there<end_of_turn>\n<start_of_turn>model\nthe cat"


def test_prefill_continues_the_last_assistant_message(client: openai.OpenAI) -> None:
    continued = client.chat.completions.create(model="m", messages=PREFILL, max_tokens=6, temperature=0,
                                               extra_body={"continue_final_message": True})
    by_flag = client.chat.completions.create(model="m", messages=PREFILL, max_tokens=6, temperature=0,
                                             extra_body={"add_generation_prompt": False})
    closed = client.chat.completions.create(model="m", messages=PREFILL, max_tokens=6, temperature=0)
    # The same tokens as a raw completion of the open turn: the model continues "the cat".
    raw = client.completions.create(model="m", prompt=OPEN_TURN, max_tokens=6, temperature=0)
    text = continued.choices[0].message.content
    assert text and raw.choices[0].text.startswith(text)
    assert continued.usage.prompt_tokens == raw.usage.prompt_tokens
    assert by_flag.choices[0].message.content == text
    assert closed.usage.prompt_tokens > continued.usage.prompt_tokens  # end of turn + a new model turn


def test_prefill_needs_an_assistant_message_last(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="m", messages=USER, max_tokens=1,
                                       extra_body={"continue_final_message": True})
    assert refused.value.body["param"] == "continue_final_message"


def test_a_base_url_without_v1_works(server: ServerProcess) -> None:
    client = openai.OpenAI(base_url=server.url, api_key="-", max_retries=0, timeout=60,
                           _strict_response_validation=True)
    assert server.url.endswith("/") and not server.url.endswith("/v1/")
    assert [m.id for m in client.models.list().data] == ["tiny"]  # tiny.llmpack
    answer = client.chat.completions.create(model="m", messages=USER, max_tokens=2, temperature=0)
    assert answer.object == "chat.completion" and answer.usage.completion_tokens <= 2
    assert 'route="other"' not in httpx.get(server.url + "metrics").text  # counted as chat and models


def test_system_fingerprint(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(model="m", messages=USER, max_tokens=2)
    assert answer.system_fingerprint and answer.system_fingerprint.startswith("llmpack-0.")
    chunks = list(client.chat.completions.create(model="m", messages=USER, max_tokens=2, stream=True))
    assert {c.system_fingerprint for c in chunks} == {answer.system_fingerprint}
    text = client.completions.create(model="m", prompt="hi", max_tokens=2)
    assert text.system_fingerprint == answer.system_fingerprint


def test_cached_tokens_on_a_repeated_prompt(client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "four score and seven years ago"}]
    first = client.chat.completions.create(model="m", messages=messages, max_tokens=2, temperature=0)
    second = client.chat.completions.create(model="m", messages=messages, max_tokens=2, temperature=0)
    assert first.usage.prompt_tokens_details is not None
    assert first.usage.prompt_tokens_details.cached_tokens < second.usage.prompt_tokens_details.cached_tokens
    assert 0 < second.usage.prompt_tokens_details.cached_tokens <= second.usage.prompt_tokens
    streamed = list(client.chat.completions.create(model="m", messages=messages, max_tokens=2, temperature=0,
                                                   stream=True, stream_options={"include_usage": True}))
    assert streamed[-1].usage.prompt_tokens_details.cached_tokens > 0
    prompt = "the cat and the dog and the world"
    client.completions.create(model="m", prompt=prompt, max_tokens=2, temperature=0)
    again = client.completions.create(model="m", prompt=prompt, max_tokens=2, temperature=0)
    assert again.usage.prompt_tokens_details.cached_tokens > 0
