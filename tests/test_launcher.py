"""The native launcher (runtime/launcher/launcher.c), built by bundler/launcher_build.py and run at the
head of files in the executable layout (tests/support/launcher_files.py). The "runtime" it unpacks and
execs is a small shell script that reports what it was given, so no PyInstaller is needed here; the
end-to-end tests with the real runtime live with the bundler's tests.

Read-only, noexec and full caches are real tmpfs mounts inside `unshare -rm` (a user and mount
namespace), which works for root and other users alike."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from llmpack.bundler import messages
from llmpack.bundler.errors import BuildError
from llmpack.bundler.launcher_build import LAUNCHER_SOURCE, build_launcher
from support.launcher_files import (
    ENTRY_FIELDS,
    ENTRY_HEADER,
    FOOTER,
    PROGRAM,
    SYMLINK,
    Entry,
    cache_key,
    executable_bytes,
    footer_fields,
    pack,
    with_footer,
    write_executable,
)

# The stand-in runtime: prints its pid (the launcher's own when it execs), the variables the launcher
# sets, its argv and a data file from the pack; TEST_* variables make it wait, trap or exit with a code.
SCRIPT = b"""#!/bin/sh
echo "pid=$$"
echo "bundle=$LLMPACK_BUNDLE"
echo "runtime_dir=$LLMPACK_RUNTIME_DIR"
echo "argv0=$LLMPACK_ARGV0"
echo "program=$0"
for arg in "$@"; do echo "arg=$arg"; done
echo "data=$(cat "$LLMPACK_RUNTIME_DIR/_internal/data.txt")"
if [ -n "$TEST_TRAP" ]; then
    trap 'echo "got=TERM"; exit 42' TERM
    echo "ready=1"
    while :; do sleep 0.05; done
fi
if [ -n "$TEST_SLEEP" ]; then echo "ready=1"; exec sleep 60; fi
exit "${TEST_EXIT:-0}"
"""
DATA = "the pack's data file"
WARNING = "warning: cannot use the runtime cache {dir} ({reason}); unpacking to a temporary folder for this run"


def runtime_entries(*extra: Entry) -> list[Entry]:
    return [Entry(PROGRAM, SCRIPT, 0o755), Entry("_internal/data.txt", DATA.encode(), compress=True), *extra]


@pytest.fixture(scope="module")
def launcher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_launcher(tmp_path_factory.mktemp("launcher") / "launcher")


@dataclass
class Place:
    """Where a test's launcher writes: its cache and its TMPDIR (which must stay empty)."""

    cache: Path
    tmp: Path
    root: Path

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in ("LLMPACK_CACHE", "XDG_CACHE_HOME", "LLMPACK_VERBOSE", "TMPDIR") and not k.startswith("TEST_")}
        return {**env, "LLMPACK_CACHE": str(self.cache), "TMPDIR": str(self.tmp), **extra}

    def runtimes(self) -> list[str]:
        folder = self.cache / "runtime"
        return sorted(os.listdir(folder)) if folder.is_dir() else []


@pytest.fixture
def place(tmp_path: Path) -> Place:
    (tmp_path / "tmp").mkdir()
    return Place(tmp_path / "cache", tmp_path / "tmp", tmp_path)


@pytest.fixture
def executable(launcher: Path, place: Place) -> Path:
    return write_executable(place.root / "model.llmpack", launcher, pack(runtime_entries()), gguf=b"GGUF" * 64)


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str
    pid: int

    @property
    def fields(self) -> dict[str, str]:
        return dict(line.split("=", 1) for line in self.stdout.splitlines() if "=" in line and not line.startswith("arg="))

    @property
    def args(self) -> list[str]:
        return [line[4:] for line in self.stdout.splitlines() if line.startswith("arg=")]


def start(command: list[str] | Path, env: dict[str, str], **popen) -> subprocess.Popen:
    command = [str(command)] if isinstance(command, Path) else command
    return subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)


def finish(process: subprocess.Popen) -> Ran:
    stdout, stderr = process.communicate(timeout=60)
    return Ran(process.returncode, stdout, stderr, process.pid)


def launch(command: list[str] | Path, env: dict[str, str], **popen) -> Ran:
    return finish(start(command, env, **popen))


def damaged_line(path: Path, result: Ran) -> str:
    """Exit 1 and exactly one stderr line, the launcher's damage message; returns its reason."""
    assert result.returncode == 1, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    prefix, suffix = f"error: {path} is damaged: ", "; download or build it again"
    assert lines[0].startswith(prefix) and lines[0].endswith(suffix), lines[0]
    assert result.stdout == ""
    return lines[0][len(prefix):-len(suffix)]


def wait_for_line(process: subprocess.Popen, key: str) -> dict[str, str]:
    """Reads the script's lines until key= appears; returns what it printed so far."""
    seen = {}
    while key not in seen:
        line = process.stdout.readline()
        assert line, f"the runtime ended before printing {key}="
        name, _, value = line.rstrip("\n").partition("=")
        seen[name] = value
    return seen


# -- SHA-256 and the build -------------------------------------------------------------------------------

HARNESS = """#define main launcher_main
#include "launcher.c"
#undef main
/* Hashes stdin's first N bytes for every N in argv, fed in pieces of 1, 2, 3... bytes (buffering). */
int main(int argc, char **argv) {
    static unsigned char data[1 << 22];
    size_t length = fread(data, 1, sizeof data, stdin);
    int i, j;
    for (i = 1; i < argc; i++) {
        size_t n = (size_t)strtoul(argv[i], NULL, 10), at = 0, piece = 1;
        sha256_ctx c;
        unsigned char digest[32];
        if (n > length) return 2;
        sha256_init(&c);
        while (at < n) {
            size_t take = piece < n - at ? piece : n - at;
            sha256_update(&c, data + at, take);
            at += take;
            piece = piece * 3 % 257 + 1;
        }
        sha256_final(&c, digest);
        for (j = 0; j < 32; j++) printf("%02x", digest[j]);
        printf("\\n");
    }
    return 0;
}
"""


@pytest.fixture(scope="module")
def sha256_harness(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("sha256")
    (folder / "harness.c").write_text(HARNESS)
    binary = folder / "harness"
    subprocess.run(["cc", "-std=c99", "-O2", "-D_GNU_SOURCE", f"-I{LAUNCHER_SOURCE.parent}", "-o", str(binary),
                    str(folder / "harness.c"), "-lz"], check=True, capture_output=True)
    return binary


def c_sha256(harness: Path, data: bytes, *lengths: int) -> list[str]:
    result = subprocess.run([str(harness), *map(str, lengths)], input=data, capture_output=True, check=True)
    return result.stdout.decode().split()


def test_sha256_gives_the_fips_180_4_vectors(sha256_harness: Path) -> None:
    known = {
        b"": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        b"abc": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq":
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
        b"a" * 1_000_000: "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0",
    }
    for message, digest in known.items():
        assert c_sha256(sha256_harness, message, len(message)) == [digest]


def test_sha256_matches_hashlib_across_every_padding_boundary(sha256_harness: Path) -> None:
    data = random.Random(15).randbytes(300_000)
    lengths = [*range(0, 200), 511, 512, 513, 4095, 4096, 65_537, 300_000]
    assert c_sha256(sha256_harness, data, *lengths) == [hashlib.sha256(data[:n]).hexdigest() for n in lengths]


@pytest.mark.skipif(sys.platform != "linux", reason="ldd and static zlib are the Linux build's")
def test_the_launcher_needs_only_the_c_library(launcher: Path) -> None:
    linked = subprocess.run(["ldd", str(launcher)], capture_output=True, text=True, check=True).stdout
    assert "libz" not in linked and "libc.so" in linked


def test_a_missing_compiler_is_one_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    with pytest.raises(BuildError) as raised:
        build_launcher(tmp_path / "launcher")
    assert str(raised.value) == messages.LAUNCHER_NO_COMPILER.format(cc=tmp_path / "no-such-cc")


def test_a_failing_compiler_shows_its_last_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    compiler = tmp_path / "failing-cc"
    compiler.write_text("#!/bin/sh\nfor n in 1 2 3 4 5; do echo \"line $n\" >&2; done\nexit 1\n")
    compiler.chmod(0o755)
    monkeypatch.setenv("CC", f"{compiler} -v")
    with pytest.raises(BuildError) as raised:
        build_launcher(tmp_path / "launcher")
    assert str(raised.value) == messages.LAUNCHER_COMPILE_FAILED.format(cc=compiler, detail="line 3; line 4; line 5")


# -- a start: unpack once, then exec ---------------------------------------------------------------------

def test_the_first_start_unpacks_and_execs_and_the_next_reuses_the_entry(executable: Path, place: Place) -> None:
    link = place.root / "through-a-link"
    link.symlink_to(executable)
    entry = place.cache / "runtime" / cache_key(pack(runtime_entries()))
    first = launch([str(link), "a b", "", "--cli"], place.env(LLMPACK_VERBOSE="1"))
    assert first.returncode == 0, first.stderr
    assert first.stderr == f"llmpack: unpacking the runtime into {entry}\n"
    assert first.fields == {"pid": str(first.pid),  # exec, not fork: the runtime is the process started
                            "bundle": str(executable), "runtime_dir": str(entry), "argv0": str(link),
                            "program": str(entry / PROGRAM), "data": DATA}
    assert first.args == ["a b", "", "--cli"]
    assert place.runtimes() == [entry.name] and (entry / PROGRAM).read_bytes() == SCRIPT
    unpacked = (entry / PROGRAM).stat()

    second = launch(executable, place.env(LLMPACK_VERBOSE="1", TEST_EXIT="7"))
    assert second.returncode == 7 and second.stderr == ""  # verbose, yet nothing unpacked
    assert second.fields["pid"] == str(second.pid) and second.fields["argv0"] == str(executable)
    again = (entry / PROGRAM).stat()
    assert (again.st_ino, again.st_mtime_ns) == (unpacked.st_ino, unpacked.st_mtime_ns)
    assert place.runtimes() == [entry.name] and os.listdir(place.tmp) == []


@pytest.mark.parametrize("variables, root", [
    ({"LLMPACK_CACHE": "relative/cache"}, "relative/cache"),  # made absolute: the runtime may chdir
    ({"LLMPACK_CACHE": "", "XDG_CACHE_HOME": "{base}/xdg"}, "{base}/xdg/llmpack"),
    ({"LLMPACK_CACHE": "", "XDG_CACHE_HOME": "", "HOME": "{base}/home"}, "{base}/home/.cache/llmpack"),
], ids=["LLMPACK_CACHE", "XDG_CACHE_HOME", "HOME"])
def test_the_cache_root_follows_the_python_rule(executable: Path, place: Place, variables: dict[str, str],
                                                 root: str) -> None:
    base = place.root
    env = {**place.env(), **{k: v.format(base=base) for k, v in variables.items()}}
    result = launch(executable, env, cwd=base)
    assert result.returncode == 0, result.stderr
    expected = base / root.format(base=base) / "runtime" / cache_key(pack(runtime_entries()))
    assert result.fields["runtime_dir"] == str(expected) and (expected / PROGRAM).is_file()


def test_a_damaged_cache_entry_is_unpacked_again(executable: Path, place: Place) -> None:
    assert launch(executable, place.env()).returncode == 0
    (entry,) = (place.cache / "runtime").iterdir()
    (entry / PROGRAM).write_bytes(b"#!/bin/sh\necho cut\n")  # someone edited the cache by hand
    result = launch(executable, place.env())
    assert result.returncode == 0 and result.fields["data"] == DATA, result.stderr
    assert (entry / PROGRAM).read_bytes() == SCRIPT and place.runtimes() == [entry.name]


def test_symlinks_and_modes_come_out_right(launcher: Path, place: Place) -> None:
    extra = [Entry("_internal/lib/libx.so.1", b"\x7fELF" + bytes(5000), 0o755, compress=True),
             Entry("_internal/libx.so", b"lib/libx.so.1", kind=SYMLINK),
             Entry("_internal/lib/up.txt", b"../data.txt", kind=SYMLINK),
             Entry("_internal/secret.key", b"private", 0o600),
             Entry("_internal/tool", b"#!/bin/sh\n", 0o700),
             Entry("_internal/empty", b""),
             Entry("_internal/empty.z", b"", compress=True),
             Entry("_internal/a/b/c/deep.bin", bytes(range(256)) * 1000, 0o444)]
    executable = write_executable(place.root / "modes.llmpack", launcher, pack(runtime_entries(*extra)))
    # A strict umask: the files' modes are the pack's all the same; the folders follow the umask.
    result = launch(executable, place.env(), preexec_fn=lambda: os.umask(0o077))
    assert result.returncode == 0, result.stderr
    internal = Path(result.fields["runtime_dir"]) / "_internal"
    assert os.readlink(internal / "libx.so") == "lib/libx.so.1"
    assert (internal / "libx.so").read_bytes() == b"\x7fELF" + bytes(5000)
    assert (internal / "lib" / "up.txt").read_text() == DATA
    modes = {name: (internal / name).stat().st_mode & 0o7777
             for name in ("lib/libx.so.1", "secret.key", "tool", "empty", "a/b/c/deep.bin", "data.txt", "a/b")}
    assert modes == {"lib/libx.so.1": 0o755, "secret.key": 0o600, "tool": 0o700, "empty": 0o644,
                     "a/b/c/deep.bin": 0o444, "data.txt": 0o644, "a/b": 0o700}
    assert (internal / "empty").read_bytes() == b"" == (internal / "empty.z").read_bytes()
    assert (internal / "a/b/c/deep.bin").read_bytes() == bytes(range(256)) * 1000
    assert (internal.parent.stat().st_mode & 0o777) == 0o700


# -- damage ----------------------------------------------------------------------------------------------

def cuts(data: bytes, launcher_size: int) -> list[int]:
    rest = len(data) - launcher_size
    return sorted({launcher_size + rest * k // 16 for k in range(16)}
                  | {len(data) - n for n in (1, 2, 3, 4, 8, 155, 156, 157)})


def test_a_truncated_executable_is_one_line_and_exit_1_at_every_depth(executable: Path, launcher: Path,
                                                                       place: Place) -> None:
    data = executable.read_bytes()
    for cut in cuts(data, launcher.stat().st_size):
        executable.write_bytes(data[:cut])
        reason = damaged_line(executable, launch(executable, place.env()))
        assert reason == "truncated: no llmpack footer at its end", cut
    assert place.runtimes() == [] and os.listdir(place.tmp) == []


def test_a_damaged_footer_or_pack_header_is_named(executable: Path, place: Place) -> None:
    data = executable.read_bytes()
    fields = footer_fields(data)
    size, offset = len(data), fields["runtime_offset"]
    flipped_pack_magic = bytearray(data)
    flipped_pack_magic[offset] ^= 0xFF
    cases = {
        "footer checksum mismatch": with_footer(data, crc32=fields["crc32"] ^ 1),
        "unknown footer version; it needs another llmpack": with_footer(data, version=3),
        "runtime out of range": with_footer(data, runtime_offset=size),
        "runtime out of range ": with_footer(data, runtime_length=2**64 - 1),
        "runtime out of range  ": with_footer(data, manifest_length=size),
        "runtime out of range   ": with_footer(data, runtime_length=8),
        "runtime archive damaged (bad header)": with_footer(bytes(flipped_pack_magic)),
    }
    for reason, damaged in cases.items():
        executable.write_bytes(damaged)
        assert damaged_line(executable, launch(executable, place.env())) == reason.strip()
    assert place.runtimes() == []


def test_a_flipped_byte_in_the_pack_is_one_line_and_leaves_no_entry(executable: Path, place: Place) -> None:
    data = executable.read_bytes()
    offset, length = footer_fields(data)["runtime_offset"], footer_fields(data)["runtime_length"]
    first_entry = offset + 16
    program_fields = first_entry + 2 + len(PROGRAM)
    positions = {"entry count": offset + 12, "the program's path": first_entry + 5,
                 "the program's size": program_fields + 6, "the program's mode": program_fields + 3,
                 "the program's sha256": program_fields + 30, "the program's bytes": program_fields + 54 + 20,
                 "the data's compressed bytes": offset + length - 8, "the pack's last byte": offset + length - 1}
    for where, position in positions.items():
        damaged = bytearray(data)
        damaged[position] ^= 0x40
        executable.write_bytes(damaged)
        reason = damaged_line(executable, launch(executable, place.env()))
        assert reason.startswith("runtime archive damaged ("), where
        assert place.runtimes() == [], where  # neither an entry nor a .partial folder
    assert os.listdir(place.tmp) == []


def raw_entry(path: bytes, data: bytes, kind: int = 0, compression: int = 0) -> bytes:
    return (ENTRY_HEADER.pack(len(path)) + path
            + ENTRY_FIELDS.pack(kind, compression, 0o644, len(data), len(data), hashlib.sha256(data).digest()) + data)


UNSAFE = {
    "absolute path": [Entry("/tmp/escaped", b"x")],
    "dot-dot component": [Entry("_internal/../../escaped", b"x")],
    "empty component": [Entry("_internal//x", b"x")],
    "dot component": [Entry("./x", b"x")],
    "trailing slash": [Entry("_internal/x/", b"x")],
    "link out of the folder": [Entry("_internal/out", b"../../escaped", kind=SYMLINK)],
    "absolute link": [Entry("_internal/out", b"/etc/passwd", kind=SYMLINK)],
    "write through a link": [Entry("_internal/up", b"..", kind=SYMLINK), Entry("_internal/up/x", b"x")],
    "the same path twice": [Entry("_internal/twice", b"1"), Entry("_internal/twice", b"2")],
    "a file under a file": [Entry("_internal/file", b"1"), Entry("_internal/file/x", b"2")],
}


@pytest.mark.parametrize("case", UNSAFE)
def test_an_unsafe_entry_is_refused(launcher: Path, place: Place, case: str) -> None:
    executable = write_executable(place.root / "unsafe.llmpack", launcher, pack(runtime_entries(*UNSAFE[case])))
    assert damaged_line(executable, launch(executable, place.env())) == "runtime archive damaged (bad entry)"
    assert place.runtimes() == [] and os.listdir(place.tmp) == []
    assert not (place.root / "escaped").exists() and not Path("/tmp/escaped").exists()


@pytest.mark.parametrize("case", ["not the program first", "an unknown kind", "an unknown compression",
                                  "a bad zlib stream", "trailing bytes"])
def test_a_malformed_pack_is_refused(launcher: Path, place: Place, case: str) -> None:
    body = b"".join(raw_entry(e.path.encode(), e.data) for e in runtime_entries())
    count = 3
    if case == "not the program first":
        body, count = raw_entry(b"other", b"x") + body, 4
    elif case == "an unknown kind":
        body += raw_entry(b"odd", b"x", kind=2)
    elif case == "an unknown compression":
        body += raw_entry(b"odd", b"x", compression=2)
    elif case == "a bad zlib stream":
        body += raw_entry(b"odd", b"not zlib", compression=1)
    else:
        body, count = body + b"extra", 2
    runtime = b"LLMPACKR" + (1).to_bytes(4, "little") + count.to_bytes(4, "little") + body
    executable = place.root / "malformed.llmpack"
    executable.write_bytes(executable_bytes(launcher.read_bytes(), runtime))
    executable.chmod(0o755)
    reason = damaged_line(executable, launch(executable, place.env()))
    assert reason.startswith("runtime archive damaged ("), reason
    assert place.runtimes() == []


# -- two at once, and what a killed launcher left ----------------------------------------------------------

def test_launchers_started_together_share_one_entry(launcher: Path, place: Place) -> None:
    big = Entry("_internal/big.bin", random.Random(2).randbytes(4 << 20), 0o644)  # a slower unpack
    executable = write_executable(place.root / "race.llmpack", launcher, pack(runtime_entries(big)))
    for round_ in range(3):
        cache = place.root / f"cache-{round_}"
        processes = [start(executable, {**place.env(), "LLMPACK_CACHE": str(cache)}) for _ in range(4)]
        results = [finish(p) for p in processes]
        assert all(r.returncode == 0 and r.fields["data"] == DATA and r.stderr == "" for r in results), results
        assert os.listdir(cache / "runtime") == [cache_key(pack(runtime_entries(big)))]
    assert os.listdir(place.tmp) == []


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_partial_folders_of_dead_launchers_are_removed(executable: Path, place: Place) -> None:
    runtimes = place.cache / "runtime"
    dead = runtimes / f".partial-0123456789abcdef-{dead_pid()}-AbCdEf"
    alive = runtimes / f".partial-0123456789abcdef-{os.getpid()}-AbCdEf"
    for folder in (dead, alive):
        (folder / "_internal").mkdir(parents=True)
        (folder / "_internal" / "half.so").write_bytes(b"half")
    result = launch(executable, place.env())
    assert result.returncode == 0, result.stderr
    assert place.runtimes() == sorted([alive.name, cache_key(pack(runtime_entries()))])


# -- the fallback: a temporary folder for one run ----------------------------------------------------------

def test_a_cache_under_a_file_falls_back_to_a_temporary_folder(executable: Path, place: Place) -> None:
    blocker = place.root / "a-file"
    blocker.write_text("")
    env = {**place.env(TEST_EXIT="5"), "LLMPACK_CACHE": str(blocker / "cache")}
    result = launch(executable, env)
    assert result.returncode == 5
    assert result.stderr.splitlines() == [WARNING.format(dir=blocker / "cache" / "runtime", reason="Not a directory")]
    runtime_dir = Path(result.fields["runtime_dir"])
    assert runtime_dir.parent == place.tmp and runtime_dir.name.startswith(f"llmpack-runtime-{result.pid}-")
    assert result.fields["pid"] != str(result.pid) and result.fields["data"] == DATA  # a child, this time
    assert os.listdir(place.tmp) == []  # removed at exit


def test_no_cache_and_no_temporary_folder_is_one_error(executable: Path, place: Place) -> None:
    blocker = place.root / "a-file"
    blocker.write_text("")
    env = {**place.env(), "LLMPACK_CACHE": str(blocker / "cache"), "TMPDIR": str(blocker / "tmp")}
    result = launch(executable, env)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"error: cannot use the runtime cache {blocker}/cache/runtime (Not a directory) "
        f"nor a temporary folder in {blocker}/tmp (Not a directory)"]


def in_a_mount(executable: Path, place: Place, options: str, starts: int = 1) -> subprocess.CompletedProcess:
    """Runs the executable `starts` times with its cache on a fresh tmpfs mounted with options (in a user
    and mount namespace, so no real mount is made), then lists what the cache holds."""
    place.cache.mkdir()
    script = ('mount -t tmpfs -o "$1" tmpfs "$2" || exit 99; shift 2\n'
              'for n in $(seq "$1"); do "$2"; echo "rc=$?"; done\n'
              'ls -A "$LLMPACK_CACHE/runtime" 2>/dev/null | sed "s/^/left=/"\n')
    return subprocess.run(["unshare", "-rm", "sh", "-c", script, "sh", options, str(place.cache), str(starts),
                           str(executable)], env=place.env(), capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("options, reason, left", [
    ("ro", "Read-only file system", []),
    ("noexec", "Permission denied", ["{key}"]),  # unpacked there, but nothing runs from it
    ("size=16k", "No space left on device", []),  # full before the end: the staging folder goes too
], ids=["read-only", "noexec", "full"])
def test_an_unusable_cache_mount_falls_back_with_one_warning(launcher: Path, place: Place, options: str,
                                                            reason: str, left: list[str]) -> None:
    big = Entry("_internal/big.bin", random.Random(3).randbytes(256 << 10), 0o644)
    runtime = pack(runtime_entries(big))
    executable = write_executable(place.root / "mounted.llmpack", launcher, runtime)
    result = in_a_mount(executable, place, options, starts=2)
    warning = WARNING.format(dir=place.cache / "runtime", reason=reason)
    assert result.stderr.splitlines() == [warning, warning], result.stderr  # every start, one line each
    lines = result.stdout.splitlines()
    assert [line for line in lines if line.startswith(("rc=", "left="))] == \
        ["rc=0", "rc=0", *[f"left={name.format(key=cache_key(runtime))}" for name in left]]
    assert lines.count(f"data={DATA}") == 2
    assert os.listdir(place.tmp) == []


def test_kill_9_of_the_fallback_parent_leaves_a_folder_the_next_start_removes(executable: Path, place: Place) -> None:
    blocker = place.root / "a-file"
    blocker.write_text("")
    env = {**place.env(), "LLMPACK_CACHE": str(blocker / "cache")}
    process = start(executable, {**env, "TEST_SLEEP": "1"})
    seen = wait_for_line(process, "ready")
    process.kill()
    process.wait()
    os.kill(int(seen["pid"]), signal.SIGKILL)  # the runtime, orphaned: what the user would kill next
    process.communicate()
    (left,) = os.listdir(place.tmp)
    assert left.startswith(f"llmpack-runtime-{process.pid}-")
    result = launch(executable, env)
    assert result.returncode == 0 and result.fields["data"] == DATA
    assert os.listdir(place.tmp) == []


def test_the_fallback_parent_forwards_signals_and_passes_on_how_the_runtime_ended(executable: Path,
                                                                                  place: Place) -> None:
    blocker = place.root / "a-file"
    blocker.write_text("")
    env = {**place.env(), "LLMPACK_CACHE": str(blocker / "cache")}
    process = start(executable, {**env, "TEST_TRAP": "1"})
    wait_for_line(process, "ready")
    process.send_signal(signal.SIGTERM)  # to the launcher, which the runtime's trap then answers
    rest, _ = process.communicate(timeout=30)
    assert process.returncode == 42 and "got=TERM" in rest
    assert os.listdir(place.tmp) == []

    process = start(executable, {**env, "TEST_SLEEP": "1"})
    seen = wait_for_line(process, "ready")
    os.kill(int(seen["pid"]), signal.SIGKILL)  # the runtime dies of a signal: so does the launcher
    process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert os.listdir(place.tmp) == []  # removed before it re-raised the signal


def test_the_footer_is_the_files_last_bytes(executable: Path) -> None:
    """The layout the launcher reads is the one the helper writes (a check of the helper itself)."""
    data = executable.read_bytes()
    fields = footer_fields(data)
    assert fields["magic"] == b"LLMPACK\0" and fields["version"] == 2 and len(data) >= FOOTER.size
    runtime = data[fields["runtime_offset"]:fields["runtime_offset"] + fields["runtime_length"]]
    assert hashlib.sha256(runtime).digest() == fields["runtime_sha256"] and runtime.startswith(b"LLMPACKR")
