"""End to end: the real executable's chat driven in a real terminal (tmux): keys in with send-keys, the
screen read back with capture-pane, as a user would see it."""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from llmpack.runtime import messages
from llmpack.runtime.chat.commands import COMMANDS
from support.commands import build_bundle, llmpack, run
from support.tiny_model import write_endless_gguf

# tmux is installed by the set-up (build/system-deps.sh): a missing one is a failure, never a skip.
pytestmark = [pytest.mark.slow]

PROMPT = ">>> "
# One thread: the test machine's cores are shared, and llama.cpp's threads spin when starved.
QUIET = ["-t", "1", "--log-disable"]


def prompts(screen: str) -> list[str]:
    """The prompt lines on a screen (capture-pane drops the prompt's trailing space when empty)."""
    return re.findall(rf"^{re.escape(PROMPT.rstrip())}.*$", screen, re.MULTILINE)


class Terminal:
    """A 120x40 terminal running one command in its own tmux server (its own socket)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        # A socket of its own per terminal: a server still shutting down from the previous test
        # must not take the next test's session with it.
        self.socket = f"llmpack-{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        variables = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        command = f"env {variables} {shlex.join(argv)}; echo EXIT=$?; sleep 600"
        self._tmux("new-session", "-d", "-x", "120", "-y", "40", command)

    def _tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], check=True, capture_output=True,
                              text=True, timeout=30).stdout

    def type(self, text: str) -> None:
        self._tmux("send-keys", "-l", text)
        self._tmux("send-keys", "Enter")

    def keys(self, *keys: str) -> None:
        self._tmux("send-keys", *keys)

    def screen(self, escapes: bool = False) -> str:
        """Everything shown so far, scrollback included, without trailing blank lines; with
        `escapes`, the colour and attribute escape sequences too."""
        return self._tmux("capture-pane", "-p", "-J", "-S", "-", "-E", "-", *(["-e"] if escapes else [])).rstrip("\n")

    def wait_for(self, condition, timeout: float = 30.0, what: str = "") -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if condition(screen):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what or condition}; screen:\n{screen}")
            time.sleep(0.1)

    def wait_for_prompt(self, count: int, timeout: float = 30.0) -> str:
        """Waits until the `count`-th prompt is shown (a reply or command finished)."""
        return self.wait_for(lambda s: len(prompts(s)) >= count and s.rstrip().endswith(PROMPT.rstrip()),
                             timeout, f"prompt #{count}")

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=30, check=False)


@pytest.fixture
def terminal(tmp_path: Path):
    opened: list[Terminal] = []

    def open_terminal(*argv: str, **env: str) -> Terminal:
        environment = {"LLMPACK_HISTORY": str(tmp_path / "history"), "NO_COLOR": "1", "TERM": "xterm", **env}
        opened.append(Terminal(f"chat{len(opened)}", [*argv], environment))
        return opened[-1]

    yield open_terminal
    for t in opened:
        t.close()


@pytest.fixture(scope="module")
def endless_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = write_endless_gguf(tmp_path_factory.mktemp("endless") / "endless.gguf")
    return build_bundle(path, path.with_suffix(".llmpack"))


def context_used(screen: str) -> tuple[int, int]:
    """(tokens used, messages) from the last /context answer on the screen."""
    found = re.findall(r"context: (\d+) / \d+ tokens used, \d+ free, (\d+) messages", screen)
    assert found, screen
    return int(found[-1][0]), int(found[-1][1])


def test_chat_answers_lists_commands_and_tracks_context(tiny_bundle: Path, terminal, tmp_path: Path) -> None:
    chat = terminal(str(tiny_bundle), "--chat", "-n", "12", "-p", "Be brief.", *QUIET)
    banner = chat.wait_for_prompt(1)
    assert "model:    tiny" in banner  # the executable's name (tiny.llmpack) and "context:  512 tokens" in banner
    assert "compute:  1 CPU thread" in banner and "server:" not in banner
    assert "mode:" not in banner  # the model has a chat template: a real chat, not raw completion

    chat.type("hello there")
    screen = chat.wait_for_prompt(2)
    answer = screen.split(PROMPT + "hello there\n", 1)[1].rsplit(PROMPT, 1)[0]
    assert answer.strip(), screen  # the model said something (random weights: gibberish)

    chat.type("/help")
    screen = chat.wait_for_prompt(3)
    for name, command in COMMANDS.items():
        assert re.search(rf"^/{name}\b.*{re.escape(command.help)}", screen, re.MULTILINE), name

    chat.type("/context")
    one_exchange = context_used(chat.wait_for_prompt(4))
    assert one_exchange[1] == 2 and one_exchange[0] > 0
    chat.type("and again")
    chat.wait_for_prompt(5)
    chat.type("/stats")
    stats = re.findall(r"prompt: (\d+) tokens \((\d+) cached\)", chat.wait_for_prompt(6))
    assert stats and int(stats[-1][1]) > 0  # the second turn reused the history's KV cache
    chat.type("/context")
    two_exchanges = context_used(chat.wait_for_prompt(7))
    assert two_exchanges[1] == 4 and two_exchanges[0] > one_exchange[0]

    chat.type("/undo")
    chat.wait_for_prompt(8)
    chat.type("/context")
    assert context_used(chat.wait_for_prompt(9)) == one_exchange
    chat.type("/clear")
    chat.wait_for_prompt(10)
    chat.type("/context")
    used, count = context_used(chat.wait_for_prompt(11))
    assert count == 0 and 0 < used < one_exchange[0]  # the system prompt (-p) is kept
    chat.type("/system")
    assert "system prompt: Be brief." in chat.wait_for_prompt(12)

    chat.type("/exit")
    chat.wait_for(lambda s: "EXIT=" in s, what="the exit status")
    assert "EXIT=0" in chat.screen()
    history = (tmp_path / "history").read_text()
    assert "+hello there" in history and "+/undo" in history


def test_ctrl_c_stops_a_reply_and_the_chat_goes_on(endless_bundle: Path, terminal) -> None:
    chat = terminal(str(endless_bundle), "--chat", "-c", "16384", *QUIET)
    chat.wait_for_prompt(1)
    chat.type("talk forever")
    # The reply is streaming: text appears after the message, and no new prompt comes.
    # (Ctrl-C before that would be read by the prompt as a key typed ahead, not sent as a signal.)
    started = chat.wait_for(lambda s: PROMPT + "talk forever" in s and len(s.split(PROMPT + "talk forever", 1)[1].strip()) > 40,
                            what="reply text")
    chat.wait_for(lambda s: len(s) > len(started) + 40, what="more reply text (streaming)")
    chat.keys("C-c")
    screen = chat.wait_for_prompt(2, timeout=20)
    assert messages.CHAT_INTERRUPTED in screen
    chat.type("/context")
    used, count = context_used(chat.wait_for_prompt(3))
    assert count == 2 and 0 < used < 16384  # what was said is kept
    chat.keys("C-d")
    chat.wait_for(lambda s: "EXIT=" in s, what="the exit status")
    assert "EXIT=0" in chat.screen()


def test_keys_typed_during_a_reply_wait_unseen_for_the_next_prompt(endless_bundle: Path, terminal) -> None:
    chat = terminal(str(endless_bundle), "--chat", "-n", "1500", *QUIET)
    chat.wait_for_prompt(1)
    chat.type("talk a while")
    chat.wait_for(lambda s: PROMPT + "talk a while" in s and len(s.split(PROMPT + "talk a while", 1)[1].strip()) > 40,
                  what="reply text")
    chat.type("/context")
    screen = chat.wait_for_prompt(3, timeout=60)
    reply, after = screen.split(PROMPT + "talk a while", 1)[1].rsplit(PROMPT + "/context", 1)
    assert "/context" not in reply  # not echoed into the reply
    assert context_used(after)[1] == 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str) -> tuple[int, dict]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, json.loads(response.read())


def test_default_mode_serves_while_chatting(tiny_bundle: Path, terminal) -> None:
    port = free_port()
    chat = terminal(str(tiny_bundle), "--port", str(port), "-n", "8", *QUIET)
    banner = chat.wait_for_prompt(1)
    assert f"server:   http://127.0.0.1:{port}/" in banner
    assert get_json(f"http://127.0.0.1:{port}/health") == (200, {"status": "ok"})
    chat.type("hi")
    chat.wait_for_prompt(2)
    status, models = get_json(f"http://127.0.0.1:{port}/v1/models")
    assert status == 200 and models["data"]
    chat.keys("C-c")  # on an empty prompt: leave, and the server with it
    chat.wait_for(lambda s: "EXIT=" in s, what="the exit status")
    assert "EXIT=0" in chat.screen()
    with pytest.raises(OSError):
        get_json(f"http://127.0.0.1:{port}/health")


def test_chat_without_a_terminal_reads_messages_from_stdin(tiny_bundle: Path) -> None:
    result = run([str(tiny_bundle), "--chat", "-n", "8", *QUIET],
                 input="hello\n/nope\n/context\n/exit\nnot read\n", timeout=60)
    assert result.returncode == 0, result.stderr
    [reply] = result.stdout.splitlines()  # only the reply: the chat's own lines go to stderr
    unknown, context = result.stderr.splitlines()
    assert reply.strip() and re.match(r"context: \d+ / 512 tokens used, \d+ free, 2 messages$", context)
    assert unknown == messages.CHAT_UNKNOWN_COMMAND.format(name="/nope")


def test_a_full_context_drops_the_oldest_turns_and_the_chat_goes_on(endless_bundle: Path) -> None:
    # Each reply of the endless model runs until the 512-token context is full.
    result = run([str(endless_bundle), "--chat", "-c", "512", *QUIET], input="one\ntwo\nthree\n/context\n",
                 timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()  # the chat's notices: stdout is only the replies
    assert lines.count(messages.CHAT_CONTEXT_FULL_REPLY) == 3
    assert lines.count(messages.CHAT_CONTEXT_DROPPED.format(n=2)) == 2
    assert context_used(result.stderr)[1] == 2  # only the last exchange is left


def test_no_mode_flag_without_a_terminal_serves_instead_of_waiting_for_keys(tiny_bundle: Path) -> None:
    port = free_port()
    process = subprocess.Popen([str(tiny_bundle), "--port", str(port), "--nobrowser", "-t", "1"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                assert get_json(f"http://127.0.0.1:{port}/health") == (200, {"status": "ok"})
                break
            except OSError:
                assert process.poll() is None, process.communicate()
                assert time.monotonic() < deadline, "the server never answered"
                time.sleep(0.2)
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    assert messages.CHAT_NEEDS_TERMINAL in stderr


def test_default_mode_chats_on_when_the_port_is_taken(tiny_bundle: Path, terminal) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        chat = terminal(str(tiny_bundle), "--port", str(port), "-n", "4", "-t", "1")
        banner = chat.wait_for_prompt(1)
        assert "warning: the background server did not start" in banner and "server:" not in banner
        chat.type("hi")
        chat.wait_for_prompt(2)
        chat.keys("C-d")
        chat.wait_for(lambda s: "EXIT=" in s, what="the exit status")
        assert "EXIT=0" in chat.screen()


@pytest.mark.parametrize("no_color", ["1", ""])
def test_colour_only_when_no_color_is_unset(tiny_bundle: Path, terminal, no_color: str) -> None:
    chat = terminal(str(tiny_bundle), "--chat", "-n", "4", *QUIET, NO_COLOR=no_color, TERM="xterm-256color")
    chat.wait_for_prompt(1)
    chat.type("/context")
    chat.wait_for_prompt(2)
    screen = chat.screen(escapes=True)
    if no_color:
        assert "\x1b[" not in screen
    else:
        assert "\x1b[1msoftware:" in screen  # the banner's keys in bold
    chat.keys("C-d")


def test_the_executable_carries_the_highlighters(tiny_bundle: Path) -> None:
    """Pygments finds lexers by name at run time (string imports PyInstaller cannot follow): the
    frozen runtime must carry them, or code blocks would silently go unhighlighted. They are .pyc files
    in the folder the launcher unpacked the runtime into."""
    assert run([str(tiny_bundle), "--version"]).returncode == 0  # unpacked, if it was not yet
    entry = Path(json.loads(llmpack("inspect", str(tiny_bundle), "--json").stdout)["runtime"]["cache_entry"])
    for module in ("pygments.lexers.python", "pygments.lexers.shell", "pygments.lexers.javascript",
                   "prompt_toolkit.shortcuts.prompt", "llmpack.runtime.chat.render"):
        assert (entry / "_internal" / (module.replace(".", "/") + ".pyc")).is_file(), module


def test_piped_chat_stops_quietly_when_its_reader_goes_away(endless_bundle: Path) -> None:
    process = subprocess.Popen([str(endless_bundle), "--chat", "-n", "5000", *QUIET], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdin.write(b"hello\nand more\n")
    process.stdin.close()
    assert len(process.stdout.read(64)) == 64
    process.stdout.close()  # as `| head -c 64` does
    assert process.wait(timeout=60) == 0
    assert process.stderr.read() == b""
