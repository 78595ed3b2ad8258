"""Signs a macOS runtime's Mach-O files before they are packed: the launcher (the head of every
executable) and the frozen folder's bootloader and libraries, with the hardened runtime and a secure
timestamp, as notarization asks. Only where $LLMPACK_CODESIGN_IDENTITY names a Developer ID identity in
the keychain (the CI workflow's macOS job imports one from its secrets); elsewhere nothing is signed
and the linker's ad-hoc signature stays (enough to run on Apple silicon, not for Gatekeeper).

Signing happens here, on the parts, because an llmpack executable is the launcher with the weights and
the pack appended: codesign refuses a Mach-O whose __LINKEDIT does not end the file, so the finished
file cannot be signed as a whole (README, Platforms: what stays unverified)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

IDENTITY_VARIABLE = "LLMPACK_CODESIGN_IDENTITY"
# 64-bit Mach-O, and a universal ("fat") file, in either byte order.
_MACH_O_MAGICS = (b"\xcf\xfa\xed\xfe", b"\xfe\xed\xfa\xcf", b"\xca\xfe\xba\xbe", b"\xbe\xba\xfe\xca")


def signing_identity() -> str | None:
    identity = os.environ.get(IDENTITY_VARIABLE, "").strip()
    return identity if identity and sys.platform == "darwin" else None


def is_mach_o(path: Path) -> bool:
    if not path.is_file() or path.is_symlink():
        return False
    with open(path, "rb") as f:
        return f.read(4) in _MACH_O_MAGICS


def sign_mach_o_files(paths: list[Path]) -> int:
    """Signs every Mach-O among paths with the identity; returns how many (0 without an identity)."""
    identity = signing_identity()
    if identity is None:
        return 0
    signed = [p for p in paths if is_mach_o(p)]
    for path in signed:
        subprocess.run(["codesign", "--force", "--options", "runtime", "--timestamp", "--sign", identity, str(path)],
                       check=True, capture_output=True)
    return len(signed)
