"""The layers hold: front ends import the engine's types and interfaces, not the engine, so importing them
never loads llama.cpp's native library; the real engine and the tests' fakes satisfy the same interfaces."""

from __future__ import annotations

import inspect
import subprocess
import sys
import typing
from pathlib import Path

import pytest
from llmpack.runtime.engine.interface import ChatEngine, ServingEngine

FRONT_ENDS = ["llmpack.runtime.__main__", "llmpack.runtime.chat.session", "llmpack.runtime.chat.repl",
              "llmpack.runtime.server.app", "llmpack.runtime.server.mode", "llmpack.runtime.about.help_page",
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


# What a start must not pay for: the server's web stack, the chat's terminal toolkit, Jinja (only a chat
# renders a template), and llama-cpp-python's package __init__ (numpy and the high-level Llama class;
# the engine needs its ctypes bindings alone).
SERVER_AND_CHAT = ("llmpack.runtime.server", "llmpack.runtime.chat", "fastapi", "uvicorn", "pydantic",
                   "pydantic_core", "starlette", "anyio", "prompt_toolkit", "pygments", "jinja2")
LLAMA_CPP = ("llama_cpp",)


def modules_after_main(args: list[str]) -> tuple[set[str], str]:
    """The modules a fresh interpreter holds after the runtime's main(args), and main's stdout."""
    code = ("import sys; from llmpack.runtime.__main__ import main; rc = main(sys.argv[1:]); sys.stdout.flush(); "
            "print('\\nmodules:', ' '.join(sorted(sys.modules)), file=sys.stderr); sys.exit(rc)")
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    line = result.stderr.rsplit("\nmodules: ", 1)[1]
    return set(line.split()), result.stdout


def under(modules: set[str], packages: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in packages))


def test_cli_imports_neither_the_server_nor_the_chat(tiny_gguf: Path) -> None:
    modules, out = modules_after_main(["-m", str(tiny_gguf), "--cli", "-p", "hello", "-n", "2", "--temp", "0",
                                       "--log-disable"])
    assert out.startswith("hello") and len(out) > len("hello"), out  # it really loaded and generated
    assert "llama_cpp.llama_cpp" in modules  # the ctypes bindings...
    assert under(modules, SERVER_AND_CHAT + ("llama_cpp.llama", "numpy")) == []  # ...and nothing more


@pytest.mark.parametrize("flag", ["--version", "--help"])
def test_version_and_help_load_no_llama_cpp(flag: str) -> None:
    modules, out = modules_after_main([flag])
    assert out.startswith("llmpack " if flag == "--version" else "LLMPACK(1)"), out
    assert under(modules, LLAMA_CPP + SERVER_AND_CHAT + ("llmpack.runtime.engine.engine", "numpy")) == []


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


RUNTIME = Path(__file__).resolve().parents[1] / "runtime"


def test_the_runtime_top_level_stays_small_and_every_module_under_400_lines() -> None:
    # A newcomer names the runtime's parts by its packages; loose modules at the top grow back unless held.
    top_level = sorted(p.name for p in RUNTIME.glob("*.py") if p.name != "__init__.py")
    assert len(top_level) <= 8, top_level
    too_long = {str(p.relative_to(RUNTIME)): n for p in RUNTIME.rglob("*.py")
                if (n := len(p.read_text().splitlines())) > 400}
    assert too_long == {}, too_long
