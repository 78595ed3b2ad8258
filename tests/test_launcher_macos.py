"""The macOS launcher (runtime/launcher/launcher.c's __APPLE__ path) compiled here for arm64 and x86_64
with `zig cc` (PyPI's ziglang: clang with macOS's headers and libSystem stubs), through the same
bundler/launcher_build.py command llmpack uses on a Mac. The executables are checked, not run: nothing
here runs Mach-O. What stays unverified (README, Platforms): running them, Gatekeeper, signing and
notarization of a file with the weights appended (the CI workflow's macOS job runs the smoke test)."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from llmpack.bundler.launcher_build import FLAGS, LAUNCHER_SOURCE, build_launcher, compile_command

MACH_O_64 = 0xFEEDFACF
CPU = {"aarch64-macos": 0x0100000C, "x86_64-macos": 0x01000007}  # CPU_TYPE_ARM64, CPU_TYPE_X86_64
MH_EXECUTE = 2
LC_LOAD_DYLIB, LC_CODE_SIGNATURE = 0x0C, 0x1D
# macOS has zlib in the system (/usr/lib/libz.1.dylib), which zig does not ship a stub for: a text stub
# (.tbd, what Apple's SDK has) naming the four functions the launcher calls lets the link complete
# exactly as against the SDK, the executable loading the system's library.
LIBZ_STUB = """--- !tapi-tbd
tbd-version:     4
targets:         [ x86_64-macos, arm64-macos ]
install-name:    '/usr/lib/libz.1.dylib'
current-version: 1.2.12
compatibility-version: 1.0.0
exports:
  - targets:         [ x86_64-macos, arm64-macos ]
    symbols:         [ _crc32, _inflate, _inflateEnd, _inflateInit_ ]
...
"""


def load_commands(data: bytes) -> list[tuple[int, bytes]]:
    magic, cpu, _, file_type, count, _, _, _ = struct.unpack_from("<IiiIIIII", data, 0)
    commands, offset = [], 32
    for _ in range(count):
        command, size = struct.unpack_from("<II", data, offset)
        commands.append((command, data[offset:offset + size]))
        offset += size
    return commands


@pytest.fixture(scope="module")
def libz_stub(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("macos-libz")
    (folder / "libz.tbd").write_text(LIBZ_STUB)
    return folder


@pytest.fixture(autouse=True)
def zig_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """zig's caches (its libc stubs, built once per target) in this session's temporary folder."""
    folder = tmp_path_factory.getbasetemp() / "zig-cache"
    monkeypatch.setenv("ZIG_GLOBAL_CACHE_DIR", str(folder))
    monkeypatch.setenv("ZIG_LOCAL_CACHE_DIR", str(folder))


@pytest.mark.parametrize("zig_target", ["aarch64-macos", "x86_64-macos"])
def test_the_macos_launcher_builds_for_apple_silicon_and_intel(zig_target: str, libz_stub: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # What llmpack runs on a Mac ($CC cc), with zig's clang as cc; -L finds the libz stub.
    zig = f"{sys.executable} -m ziglang cc -target {zig_target}"
    target = "darwin-arm64" if zig_target.startswith("aarch64") else "darwin-x86_64"
    monkeypatch.setenv("CC_DARWIN", f"{zig} -L{libz_stub}")
    assert compile_command(["cc"], tmp_path / "x", target) == ["cc", *FLAGS, "-o", str(tmp_path / "x"), str(LAUNCHER_SOURCE), "-lz"]
    launcher = build_launcher(tmp_path / "launcher", target=target)
    data = launcher.read_bytes()
    magic, cpu, _, file_type = struct.unpack_from("<IiiI", data, 0)
    assert (magic, cpu, file_type) == (MACH_O_64, CPU[zig_target], MH_EXECUTE)
    commands = load_commands(data)
    dylibs = [body[24:].split(b"\0")[0].decode() for command, body in commands if command == LC_LOAD_DYLIB]
    assert "/usr/lib/libz.1.dylib" in dylibs and any("libSystem" in d for d in dylibs), dylibs
    # The __APPLE__ path was compiled: it finds itself with dyld's call, not Linux's /proc.
    assert b"_NSGetExecutablePath" in data and b"/proc/self/exe" not in data
    # Apple silicon runs only signed code: the linker's ad-hoc signature must be there (Intel needs none).
    assert (LC_CODE_SIGNATURE in [c for c, _ in commands]) == (zig_target == "aarch64-macos")


def test_a_compile_error_in_the_apple_path_would_fail_the_build(libz_stub: Path, tmp_path: Path) -> None:
    """The check above can fail: the same command on a copy of the source with an error only macOS
    compiles is refused (-Werror, as for every launcher build)."""
    broken = tmp_path / "launcher.c"
    broken.write_text(LAUNCHER_SOURCE.read_text().replace("_NSGetExecutablePath(raw, &size)", "_NSGetExecutablePath(raw, size)"))
    (tmp_path / "launcher_format.h").write_text((LAUNCHER_SOURCE.parent / "launcher_format.h").read_text())
    command = [sys.executable, "-m", "ziglang", "cc", "-target", "aarch64-macos", *FLAGS, "-o", str(tmp_path / "x"),
               str(broken), f"-L{libz_stub}", "-lz"]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ})
    assert result.returncode != 0 and "_NSGetExecutablePath" in result.stderr
