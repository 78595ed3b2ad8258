"""The Windows launcher (runtime/launcher/launcher_windows.c), cross-compiled by bundler/launcher_build.py
with Debian's mingw-w64 and run under wine64 (build/system-deps.sh installs both), at the head of files in
the executable layout (tests/support/launcher_files.py). The "runtime" it unpacks and starts is a small
Windows program compiled here that reports its arguments, environment and the pack's data file, and
exits with the code it is given (or raises Ctrl-C on its console).

Wine starts slowly (a prefix takes ~10 s to make): one prefix and one persistent wineserver serve the
whole session. Under wine the exit status a Linux parent sees is cut to 8 bits: the full 32-bit codes
are read by cmd.exe inside wine. A read-only cache is a folder made immutable (chattr +i), which root
cannot write either; Ctrl-C and Ctrl-Break need a console, so those runs get a terminal (script(1))."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from llmpack.bundler.bundle import write_bare_runtime
from llmpack.bundler.launcher_build import build_launcher
from llmpack.bundler.layout import RuntimeImage
from support.launcher_files import Entry, cache_key, executable_bytes, pack

pytestmark = pytest.mark.slow

PROGRAM = "llmpack-runtime.exe"
# The stand-in runtime: a Windows console program. TEST_EXIT sets its exit code; TEST_CTRL=c|break makes
# it raise that console event for the whole console (the launcher included) and report what it got.
STANDIN = r"""
#include <windows.h>
#include <stdio.h>
#include <stdlib.h>
#include <wchar.h>
static volatile LONG got;
static BOOL WINAPI on_event(DWORD event) { InterlockedExchange(&got, (LONG)event + 1); return TRUE; }
static void field(const char *name, const wchar_t *value) {
    static char text[98304];
    WideCharToMultiByte(CP_UTF8, 0, value, -1, text, sizeof text, NULL, NULL);
    printf("%s=%s\n", name, text);
}
static void env(const char *name, const wchar_t *variable) {
    static wchar_t value[32768];
    field(name, GetEnvironmentVariableW(variable, value, 32768) ? value : L"");
}
int wmain(int argc, wchar_t **argv) {
    static wchar_t path[32768];
    wchar_t value[64];
    char data[256];
    FILE *f;
    int i;
    env("bundle", L"LLMPACK_BUNDLE");
    env("runtime_dir", L"LLMPACK_RUNTIME_DIR");
    env("argv0", L"LLMPACK_ARGV0");
    GetModuleFileNameW(NULL, path, 32768);
    field("program", path);
    for (i = 1; i < argc; i++) field("arg", argv[i]);
    GetEnvironmentVariableW(L"LLMPACK_RUNTIME_DIR", path, 32768);
    wcscat(path, L"\\_internal\\data.txt");
    data[0] = '\0';
    if ((f = _wfopen(path, L"rb")) != NULL) { data[fread(data, 1, sizeof data - 1, f)] = '\0'; fclose(f); }
    printf("data=%s\n", data);
    fflush(stdout);
    if (GetEnvironmentVariableW(L"TEST_CTRL", value, 64)) {
        SetConsoleCtrlHandler(on_event, TRUE);
        if (!GenerateConsoleCtrlEvent(wcscmp(value, L"break") == 0 ? CTRL_BREAK_EVENT : CTRL_C_EVENT, 0))
            printf("generate_failed=%lu\n", (unsigned long)GetLastError());
        for (i = 0; i < 100 && !got; i++) Sleep(50);
        printf("got=%ld\n", (long)got - 1);
        fflush(stdout);
        return 42;
    }
    if (GetEnvironmentVariableW(L"TEST_EXIT", value, 64)) return (int)wcstoul(value, NULL, 10);
    return 0;
}
"""
DAMAGED = "error: {path} is damaged: {reason}; download or build it again"
WARNING = "warning: cannot use the runtime cache {dir} ({reason}); unpacking to a temporary folder for this run"


def windows_path(path: Path) -> str:
    """The path a Windows program under wine sees for a Linux one (wine's Z: drive is /)."""
    return "Z:" + str(path).replace("/", "\\")


@dataclass
class Wine:
    prefix: Path
    env: dict[str, str]

    def run(self, executable: Path, *args: str, pty: bool = False, cwd: Path | None = None, **extra: str) -> Ran:
        env = {**self.env, **extra}
        command = ["wine", str(executable), *args]
        if pty:  # a terminal: wine then gives the program a console, which console events need
            command = ["script", "-qec", " ".join(command), "/dev/null"]
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120,
                                stdin=subprocess.DEVNULL, cwd=cwd or executable.parent)
        stdout = result.stdout
        if pty:  # wine's console draws with escape sequences and CR LF
            stdout = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", stdout).replace("\r", "")
        return Ran(result.returncode, stdout, result.stderr)

    @property
    def local_app_data(self) -> Path:
        return self.prefix / "drive_c" / "users" / os.environ.get("USER", "root") / "AppData" / "Local"

    @property
    def temp(self) -> Path:
        return self.prefix / "drive_c" / "users" / os.environ.get("USER", "root") / "Temp"


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str

    @property
    def fields(self) -> dict[str, str]:
        return dict(line.split("=", 1) for line in self.stdout.splitlines() if "=" in line and not line.startswith("arg="))

    @property
    def args(self) -> list[str]:
        return [line[4:] for line in self.stdout.splitlines() if line.startswith("arg=")]


@pytest.fixture(scope="session")
def wine(tmp_path_factory: pytest.TempPathFactory):
    prefix = tmp_path_factory.mktemp("wine-prefix")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LLMPACK_", "TEST_", "WINE")) and k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    # No Mono or Gecko installer prompts; no debug noise on stderr (the launcher's lines are checked there).
    env.update(WINEPREFIX=str(prefix), WINEDEBUG="-all", WINEDLLOVERRIDES="mscoree,mshtml=")
    quiet = {"stdin": subprocess.DEVNULL, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    subprocess.run(["wineboot", "-i"], env=env, timeout=300, check=True, **quiet)
    server = subprocess.Popen(["wineserver", "-p", "-f"], env=env, **quiet)
    # The first program starts wine's services, which stay with the server: started here, they hold no
    # test's output pipes open (a test's run would wait for them).
    subprocess.run(["wine", "cmd", "/c", "exit"], env=env, timeout=120, check=True, **quiet)
    yield Wine(prefix, env)
    subprocess.run(["wineserver", "-k"], env=env, capture_output=True, timeout=60)
    server.wait(timeout=60)


@pytest.fixture(scope="session")
def windows_programs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """The launcher, built as llmpack builds it for windows-x86_64, and the stand-in runtime's bytes."""
    folder = tmp_path_factory.mktemp("windows-programs")
    launcher = build_launcher(folder / "launcher.exe", target="windows-x86_64")
    assert launcher.read_bytes()[:2] == b"MZ"
    (folder / "standin.c").write_text(STANDIN)
    subprocess.run(["x86_64-w64-mingw32-gcc", "-O2", "-municode", "-s", "-o", str(folder / "standin.exe"),
                    str(folder / "standin.c")], check=True, capture_output=True)
    return launcher, (folder / "standin.exe").read_bytes()


def runtime_pack(standin: bytes, data: str) -> bytes:
    """A pack whose data file makes its key (so its cache entry) this test's own."""
    return pack([Entry(PROGRAM, standin, 0o755, compress=True), Entry("_internal/data.txt", data.encode(), compress=True)])


def make_executable(folder: Path, programs: tuple[Path, bytes], data: str, name: str = "model.exe") -> tuple[Path, str]:
    launcher, standin = programs
    runtime = runtime_pack(standin, data)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(executable_bytes(launcher.read_bytes(), runtime, gguf=b"GGUF" * 64))
    return path, cache_key(runtime)


def test_first_start_unpacks_into_local_app_data_and_passes_arguments_through(wine: Wine, windows_programs, tmp_path: Path) -> None:
    executable, key = make_executable(tmp_path, windows_programs, "first start")
    args = ["plain", "with space", 'a "quoted" word', "", "trailing\\", "naïve ünïcode ✓", "-p", "--flag=x y"]
    ran = wine.run(executable, *args)
    assert ran.returncode == 0, ran
    entry = wine.local_app_data / "llmpack" / "runtime" / key
    assert ran.args == args
    assert ran.fields["data"] == "first start"
    assert ran.fields["bundle"] == windows_path(executable)
    assert ran.fields["argv0"] == windows_path(executable)
    assert ran.fields["runtime_dir"].endswith(f"\\AppData\\Local\\llmpack\\runtime\\{key}")
    assert ran.fields["program"] == ran.fields["runtime_dir"] + "\\" + PROGRAM
    assert sorted(p.relative_to(entry).as_posix() for p in entry.rglob("*")) == ["_internal", "_internal/data.txt", PROGRAM]
    assert os.listdir(entry.parent).count(key) == 1 and not [n for n in os.listdir(entry.parent) if n.startswith(".partial-")]
    assert ran.stderr == ""


def test_a_cached_start_runs_the_unpacked_runtime_without_unpacking(wine: Wine, windows_programs, tmp_path: Path) -> None:
    executable, key = make_executable(tmp_path, windows_programs, "cached")
    cache = tmp_path / "cache"
    first = wine.run(executable, LLMPACK_CACHE=windows_path(cache), LLMPACK_VERBOSE="1")
    assert first.returncode == 0 and "llmpack: unpacking the runtime into" in first.stderr, first
    # Proof that the second start reads the cache entry rather than the pack: a change made there shows.
    (cache / "runtime" / key / "_internal" / "data.txt").write_text("changed in the cache")
    second = wine.run(executable, "again", LLMPACK_CACHE=windows_path(cache), LLMPACK_VERBOSE="1")
    assert second.returncode == 0 and second.stderr == "", second
    assert second.fields["data"] == "changed in the cache" and second.args == ["again"]
    assert second.fields["runtime_dir"] == windows_path(cache / "runtime" / key)


def test_a_damaged_file_gives_the_damage_line_and_unpacks_nothing(wine: Wine, windows_programs, tmp_path: Path) -> None:
    executable, key = make_executable(tmp_path, windows_programs, "damaged")
    whole = executable.read_bytes()
    cache = tmp_path / "cache"
    cases = {
        "truncated: no llmpack footer at its end": whole[:-100],
        "footer checksum mismatch": whole[:-8] + bytes(b ^ 0xFF for b in whole[-8:]),
        # A byte of the stand-in's compressed bytes, inside the pack.
        "runtime archive damaged (bad compressed data)": whole[:len(whole) - 2000] + bytes([whole[-2000] ^ 0x55]) + whole[len(whole) - 1999:],
    }
    for reason, content in cases.items():
        executable.write_bytes(content)
        ran = wine.run(executable, LLMPACK_CACHE=windows_path(cache))
        assert ran.returncode == 1 and ran.stdout == "", ran
        assert ran.stderr.splitlines() == [DAMAGED.format(path=windows_path(executable), reason=reason)]
    assert not (cache / "runtime").exists() or os.listdir(cache / "runtime") == []


def test_a_read_only_cache_falls_back_to_a_temporary_folder_removed_after(wine: Wine, windows_programs, tmp_path: Path) -> None:
    executable, key = make_executable(tmp_path, windows_programs, "read-only")
    cache = tmp_path / "cache"
    cache.mkdir()
    subprocess.run(["chattr", "+i", str(cache)], check=True)  # immutable: not even root writes in it
    try:
        ran = wine.run(executable, "x", LLMPACK_CACHE=windows_path(cache))
    finally:
        subprocess.run(["chattr", "-i", str(cache)], check=True)
    assert ran.returncode == 0, ran
    assert ran.stderr.splitlines() == [WARNING.format(dir=windows_path(cache / "runtime"), reason="Access denied")]
    assert ran.fields["data"] == "read-only" and ran.args == ["x"]
    assert "\\Temp\\llmpack-runtime-" in ran.fields["runtime_dir"]
    assert not [n for n in os.listdir(wine.temp) if n.startswith("llmpack-runtime-")]
    assert os.listdir(cache) == []


def test_exit_codes_pass_through_with_all_32_bits(wine: Wine, windows_programs, tmp_path: Path) -> None:
    executable, _ = make_executable(tmp_path, windows_programs, "exit codes")
    codes = [0, 3, 255, 256, 0xC000013A]  # 0xC000013A: how Windows reports a program ended by Ctrl-C
    # Each %ERRORLEVEL% on its own line: cmd expands a line's variables once, before running it.
    lines = [f"set TEST_EXIT={code}\r\n{executable.name} > NUL\r\necho code=%ERRORLEVEL%\r\n" for code in codes]
    (tmp_path / "codes.bat").write_text("@echo off\r\n" + "".join(lines))
    ran = subprocess.run(["wine", "cmd", "/c", "codes.bat"], env=wine.env, capture_output=True, text=True,
                         timeout=120, cwd=tmp_path, stdin=subprocess.DEVNULL)
    seen = [int(line.split("=")[1]) & 0xFFFFFFFF for line in ran.stdout.splitlines() if line.startswith("code=")]
    assert seen == codes, ran
    assert wine.run(executable, TEST_EXIT="7").returncode == 7  # and as a Linux parent sees it


def test_ctrl_c_reaches_the_runtime_and_the_launcher_waits_for_it(wine: Wine, windows_programs, tmp_path: Path) -> None:
    """The runtime handles the console event and exits 42 on its own: 42 reaches the shell, not the
    launcher's own death by Ctrl-C (0xC000013A, 58 in 8 bits). Ctrl-Break takes the same path in the
    launcher, but wine 8 cannot raise it (GenerateConsoleCtrlEvent(CTRL_BREAK_EVENT, 0) fails there with
    ERROR_INVALID_HANDLE), so it is not run here."""
    executable, _ = make_executable(tmp_path, windows_programs, "ctrl-c")
    ran = wine.run(executable, pty=True, TEST_CTRL="c")
    assert "generate_failed" not in ran.stdout and "got=0" in ran.stdout.splitlines(), ran  # 0: CTRL_C_EVENT
    assert ran.returncode == 42, ran


def test_long_paths_an_executable_deep_in_folders_and_a_cache_too_deep_to_start_from(wine: Wine, windows_programs, tmp_path: Path) -> None:
    """The launcher reads its own file and makes folders through \\\\?\\ paths past MAX_PATH; CreateProcess
    cannot start a program there, so a cache that deep is refused with the warning and a temporary folder."""
    deep = tmp_path.joinpath(*[f"a-folder-name-forty-characters-long-{i:03d}" for i in range(8)])
    executable, key = make_executable(deep, windows_programs, "long paths")
    assert len(windows_path(executable)) > 300
    ran = wine.run(executable, cwd=tmp_path, LLMPACK_CACHE=windows_path(deep / "cache"))  # wine warns of a deep cwd
    assert ran.returncode == 0 and ran.fields["data"] == "long paths", ran
    assert ran.fields["bundle"] == "\\\\?\\" + windows_path(executable)  # past MAX_PATH: the \\?\ form
    reason = "its path is too long to start a program from (260 characters or more)"
    assert ran.stderr.splitlines() == [WARNING.format(dir="\\\\?\\" + windows_path(deep / "cache" / "runtime"), reason=reason)]
    assert "\\Temp\\llmpack-runtime-" in ran.fields["runtime_dir"]
    assert not (deep / "cache" / "runtime" / key).exists()


def _big_gguf(path: Path, size: int) -> None:
    """A GGUF with one F32 tensor filling `size` bytes, sparse: its data are holes, never written."""
    def text(s: str) -> bytes:
        return struct.pack("<Q", len(s)) + s.encode()
    elements = size // 4
    head = (b"GGUF" + struct.pack("<IQQ", 3, 1, 1) + text("general.architecture") + struct.pack("<I", 8) + text("llama")
            + text("big") + struct.pack("<IQIQ", 1, elements, 0, 0))
    head += b"\0" * (-len(head) % 32)
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(len(head) + 4 * elements)


def test_weights_over_4_gib_go_beside_the_windows_executable_which_runs(wine: Wine, windows_programs, tmp_path: Path) -> None:
    """llmpack build for windows-x86_64 with a runtime built elsewhere (here: the Windows launcher and
    the stand-in), weights of 4 GiB: Windows cannot run an executable that large, so they go beside it."""
    launcher, standin = windows_programs
    runtime_dir = tmp_path / "runtime-windows-x86_64"
    runtime_dir.mkdir()
    runtime = runtime_pack(standin, "sidecar")
    import hashlib
    write_bare_runtime(RuntimeImage(launcher.read_bytes(), runtime, hashlib.sha256(runtime).hexdigest()), runtime_dir / "llmpack-runtime")
    (runtime_dir / "runtime.json").write_text(json.dumps({"target": "windows-x86_64"}))
    weights = tmp_path / "big.gguf"
    _big_gguf(weights, 4 << 30)
    output = tmp_path / "out" / "model.exe"
    output.parent.mkdir()
    llmpack = shutil.which("llmpack", path=str(Path(os.sys.executable).parent))
    built = subprocess.run([llmpack, "build", str(weights), "-o", str(output), "--target", "windows-x86_64",
                            "--runtime-dir", str(runtime_dir)], capture_output=True, text=True, timeout=600,
                           env={**os.environ, "LLMPACK_CACHE": str(tmp_path / "build-cache")})
    try:
        assert built.returncode == 0, built.stderr
        sidecar = output.parent / "model.weights.gguf"
        assert "note: the weights were written beside" in built.stderr
        assert sidecar.stat().st_size == weights.stat().st_size and output.stat().st_size < 16 << 20
        ran = wine.run(output, "--cli", LLMPACK_CACHE=windows_path(tmp_path / "cache"))
        assert ran.returncode == 0 and ran.fields["data"] == "sidecar" and ran.args == ["--cli"], ran
        assert ran.fields["bundle"] == windows_path(output)
    finally:
        for big in (weights, output.parent / "model.weights.gguf"):
            big.unlink(missing_ok=True)
