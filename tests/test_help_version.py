"""--help (the man page) and --version on the real executable: the defaults and arguments stored in it,
the chat's commands, the server's routes and the environment, all kept in step with the code; --help
without loading llama.cpp."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from llmpack.runtime import __version__
from llmpack.runtime.about import help_page
from support.commands import REPO, build_bundle, llmpack, run

STORED = ["-c", "4096", "--temp", "0.5", "--nobrowser", "-p", "you are terse", "..."]


@pytest.fixture(scope="module")
def stored_bundle(tiny_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("stored")
    return build_bundle(tiny_gguf, folder / "stored.llmpack", "--args", "-c 4096 --temp 0.5 --nobrowser -p 'you are terse' ...")


def _option(page: str, spelling: str) -> str:
    """The help line under an option's spelling in the OPTIONS section."""
    lines = page.splitlines()
    at = next(i for i, line in enumerate(lines) if line.strip() == spelling)
    return lines[at + 1]


# -- the lists in help_page.py against what they describe ---------------------------------------------

def test_every_chat_command_is_in_the_help_table() -> None:
    from llmpack.runtime.chat.commands import COMMANDS

    assert list(help_page.CHAT_COMMANDS) == [(c.name, c.usage, c.help) for c in COMMANDS.values()]


def test_every_server_route_is_in_the_help_table() -> None:
    from llmpack.runtime.flags.settings import parse_args
    from llmpack.runtime.server.state import EngineHolder
    from support.apps import app_for

    settings = parse_args([]).settings
    app = app_for(settings, EngineHolder(settings))
    served = {(method, re.sub(r":\w+}", "}", route.path))
              for route in _leaf_routes(app.routes) for method in route.methods if method != "HEAD"}
    assert served == {(method, path) for method, path, _ in help_page.HTTP_ROUTES}


def _leaf_routes(routes):
    """The app's routes, through the routers it includes (newer FastAPI keeps them wrapped)."""
    for route in routes:
        if hasattr(route, "original_router"):
            yield from _leaf_routes(route.original_router.routes)
        elif getattr(route, "methods", None):
            yield route


def _environment_variables_read() -> set[str]:
    """Every variable runtime/ reads: os.environ.get("X"), os.environ["X"], os.getenv("X"), or the same
    through a module constant NAME = "X"."""
    found: set[str] = set()
    sources = [*(REPO / "runtime").rglob("*.py"), REPO / "templates" / "runtime_entry.py"]
    for source in sources:
        text = source.read_text()
        for match in re.finditer(r"(?:environ\.get\(|environ\[|getenv\()\s*([^,\])]+)", text):
            argument = match.group(1).strip()
            if argument[0] in "\"'":
                found.add(argument.strip("\"'"))
                continue
            constant = re.search(rf"^{re.escape(argument)}\s*=\s*[\"']([A-Z0-9_]+)[\"']", text, re.MULTILINE)
            assert constant, f"{source}: cannot tell which variable {argument} names"
            found.add(constant.group(1))
        found.update(re.findall(r"[\"']([A-Z0-9_]+)[\"']\s+(?:not\s+)?in\s+os\.environ", text))
    return found


def test_every_environment_variable_the_runtime_reads_is_listed() -> None:
    read = _environment_variables_read()
    assert {"LLMPACK_HISTORY", "NO_COLOR", "LLMPACK_BUNDLE", "LLMPACK_CACHE", "LLMPACK_BACKEND_DIR"} <= read
    assert read <= {name for name, _ in help_page.ENVIRONMENT}


# -- the real executable -------------------------------------------------------------------------------

@pytest.mark.slow
def test_help_shows_the_stored_defaults_and_arguments(stored_bundle: Path) -> None:
    result = run([str(stored_bundle), "--help"])
    assert result.returncode == 0 and result.stderr == ""
    page = result.stdout
    assert _option(page, "-c, --ctx-size N").endswith("[default: 4096]")
    assert _option(page, "--temp, --temperature T").endswith("[default: 0.5]")
    assert _option(page, "--nobrowser").endswith("[default: on]")
    assert _option(page, "-np, --parallel N").endswith("[default: 4]")  # not stored: the schema's
    stored = page.split("STORED ARGUMENTS\n", 1)[1].split("\n", 1)[0]
    assert stored.strip() == "-c 4096 --temp 0.5 --nobrowser -p 'you are terse' ..."
    for name, usage, text in help_page.CHAT_COMMANDS:
        spelling = f"/{name} {usage}".rstrip()
        assert re.search(rf"^    {re.escape(spelling)}\s+{re.escape(text)}$", page, re.MULTILINE), name
    for method, path, _ in help_page.HTTP_ROUTES:
        assert re.search(rf"^    {method}\s+{re.escape(path)}\s", page, re.MULTILINE), path
    environment = page.split("\nENVIRONMENT\n", 1)[1]
    for name, _ in help_page.ENVIRONMENT:
        assert re.search(rf"^    {name}\s", environment, re.MULTILINE), name


@pytest.mark.slow
def test_help_of_an_executable_without_stored_arguments(tiny_bundle: Path) -> None:
    page = run([str(tiny_bundle), "--help"]).stdout
    assert _option(page, "-c, --ctx-size N").endswith("[default: 8192]")
    assert "none (built without --args)" in page


def test_help_does_not_load_llama_cpp(tiny_bundle: Path) -> None:
    probe = ("import sys; from llmpack.runtime.__main__ import main; rc = main(['--help']); "
             "loaded = [m for m in ('llama_cpp', 'llama_cpp.llama_cpp', 'llmpack.runtime.engine.engine') if m in sys.modules]; "
             "print('loaded:', loaded, file=sys.stderr); sys.exit(rc or bool(loaded))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                            env={**__import__("os").environ, "LLMPACK_BUNDLE": str(tiny_bundle)})
    assert result.returncode == 0 and "loaded: []" in result.stderr, result.stderr
    assert "embedded weights: tiny-test-model" in result.stdout


@pytest.mark.slow
def test_version_names_llmpack_llama_cpp_backends_and_model(stored_bundle: Path) -> None:
    result = run([str(stored_bundle), "--version"])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    manifest = json.loads(llmpack("inspect", str(stored_bundle), "--json").stdout)["manifest"]
    assert lines[0] == f"llmpack {__version__}"
    assert re.fullmatch(r"llama\.cpp: ggml \S+(, commit \S+)?, llama-cpp-python "
                        + re.escape(manifest["runtime"]["llama_cpp_python"]), lines[1]), lines[1]
    assert re.fullmatch(r"backends: CPU\b.*", lines[2]), lines[2]
    model = manifest["model"]
    assert lines[3].startswith(f"model: {model['name']} ({model['file']}, ")
    assert lines[3].endswith(f", {model['quantization']}, {model['architecture']})")


def test_version_without_embedded_weights() -> None:
    result = subprocess.run([sys.executable, "-m", "llmpack.runtime", "--version"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "model: none embedded (-m FILE.gguf gives one)"
