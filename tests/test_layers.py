"""The layers hold: front ends import the engine's types and interfaces, not the engine, so importing them
never loads llama.cpp's native library; the real engine and the tests' fakes satisfy the same interfaces."""

from __future__ import annotations

import inspect
import subprocess
import sys
import typing

import pytest
from llmpack.runtime.engine.interface import ChatEngine, ServingEngine

FRONT_ENDS = ["llmpack.runtime.__main__", "llmpack.runtime.chat.session", "llmpack.runtime.chat.repl",
              "llmpack.runtime.server.app", "llmpack.runtime.server.mode", "llmpack.runtime.help_page",
              "llmpack.runtime.flags.settings"]


@pytest.mark.parametrize("module", FRONT_ENDS)
def test_importing_a_front_end_leaves_llama_cpp_unloaded(module: str) -> None:
    code = (f"import sys, {module}; "
            "print(sorted(m for m in sys.modules if m.startswith('llama_cpp') or m.startswith('llmpack.runtime.engine.')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    loaded = eval(result.stdout)  # a list of module names, printed by the line above
    assert not [m for m in loaded if m.startswith("llama_cpp")], loaded
    assert set(loaded) <= {"llmpack.runtime.engine.types", "llmpack.runtime.engine.interface",
                           "llmpack.runtime.engine.context_size"}, loaded


def protocol_members(protocol: type) -> tuple[set[str], dict[str, inspect.Signature]]:
    """(attributes, methods with their signatures) the protocol declares, its bases included."""
    attributes: set[str] = set()
    methods: dict[str, inspect.Signature] = {}
    for klass in reversed(protocol.__mro__):
        if klass in (object, typing.Protocol, typing.Generic) or not getattr(klass, "_is_protocol", False):
            continue
        attributes |= set(klass.__dict__.get("__annotations__", {}))
        for name, value in klass.__dict__.items():
            if inspect.isfunction(value) and not name.startswith("_"):
                methods[name] = inspect.signature(value)
    return attributes, methods


def assert_satisfies(implementation: type, protocol: type) -> None:
    attributes, methods = protocol_members(protocol)
    for name in attributes:
        declared = name in getattr(implementation, "__annotations__", {}) or hasattr(implementation, name)
        # Instance attributes set in __init__ only: look for the assignment in the source.
        declared = declared or f"self.{name} =" in inspect.getsource(implementation)
        assert declared, f"{implementation.__name__} has no attribute {name} ({protocol.__name__})"
    for name, expected in methods.items():
        actual = getattr(implementation, name, None)
        assert callable(actual), f"{implementation.__name__} has no method {name} ({protocol.__name__})"
        got = list(inspect.signature(actual).parameters)
        want = list(expected.parameters)
        assert got[:len(want)] == want, f"{implementation.__name__}.{name}{got} != {protocol.__name__}.{name}{want}"
        extra = [inspect.signature(actual).parameters[p] for p in got[len(want):]]
        assert all(p.default is not inspect.Parameter.empty for p in extra), (
            f"{implementation.__name__}.{name} needs more arguments than {protocol.__name__} passes")


def test_the_real_engine_satisfies_both_interfaces() -> None:
    from llmpack.runtime.engine.engine import Engine

    assert_satisfies(Engine, ChatEngine)
    assert_satisfies(Engine, ServingEngine)


def test_the_chat_fake_satisfies_the_chat_interface() -> None:
    from support.chat_fakes import FakeEngine

    assert_satisfies(FakeEngine, ChatEngine)


def test_the_server_fake_satisfies_the_serving_interface() -> None:
    from test_server_unit import FakeEngine

    assert_satisfies(FakeEngine, ServingEngine)


def test_a_drifted_fake_is_caught() -> None:
    class Drifted:
        n_ctx = 8
        bos_token = eos_token = ""

        def tokenize(self, text: str) -> list[int]:  # lost add_special and parse_special
            return []

        def generate(self, request, cancel=None):
            return iter(())

    with pytest.raises(AssertionError, match="tokenize"):
        assert_satisfies(Drifted, ChatEngine)
