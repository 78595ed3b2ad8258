"""`llmpack build --quantize TYPE`: quantizes an F32/F16/BF16 GGUF with llama.cpp's llama_model_quantize.

The quantization runs in a child process (`python -m llmpack.bundler.quantize IN OUT TYPE`): a long C
call cannot be interrupted from Python, but a child can be killed at once on Ctrl-C. Its llama.cpp log
("[  12/ 236] blk.1.attn_q.weight ...") gives the progress.
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path

from . import messages
from .errors import BuildError
from .gguf_info import FILE_TYPES, GgufInfo
from .progress import ByteProgress

log = logging.getLogger(__name__)

QUANT_TYPES = ("Q4_0", "Q4_K_S", "Q4_K_M", "Q5_0", "Q5_K_S", "Q5_K_M", "Q6_K", "Q8_0")
_FTYPE = {name: number for number, name in FILE_TYPES.items()}
_TENSOR_LINE = re.compile(rb"^\[\s*(\d+)/\s*(\d+)\]")


def check_quantizable(info: GgufInfo, target: str, force: bool) -> None:
    if target not in QUANT_TYPES:
        raise BuildError(messages.QUANT_UNKNOWN.format(type=target, types=", ".join(QUANT_TYPES)))
    if info.is_quantized and not force:
        raise BuildError(messages.QUANT_ALREADY.format(path=info.path, current=info.quantization))


def quantize(source: Path, output: Path, target: str, quiet: bool = False) -> None:
    """Writes `output` (a temporary file the caller owns) quantized to `target`."""
    command = [sys.executable, "-m", "llmpack.bundler.quantize", str(source), str(output), target]
    progress = ByteProgress(f"quantizing to {target}", enabled=not quiet)
    log.info("quantizing %s to %s with llama.cpp...", source.name, target)
    tail: list[bytes] = []
    with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as child:
        try:
            for line in child.stderr:
                tail = (tail + [line])[-5:]
                match = _TENSOR_LINE.match(line)
                if match:
                    progress.update(int(match.group(1)), int(match.group(2)))
            status = child.wait()
        except BaseException:
            child.kill()
            raise
    progress.done()
    if status != 0:
        detail = b"".join(tail).decode("utf-8", "replace").strip().splitlines()
        raise BuildError(messages.QUANT_FAILED.format(detail=detail[-1] if detail else f"exit status {status}"))


def _quantize_in_this_process(source: str, output: str, target: str) -> int:
    import llama_cpp.llama_cpp as llama

    params = llama.llama_model_quantize_default_params()
    params.ftype = _FTYPE[target]
    params.allow_requantize = True  # the parent already refused unless --force-quantize
    return llama.llama_model_quantize(source.encode(), output.encode(), params)


if __name__ == "__main__":
    sys.exit(1 if _quantize_in_this_process(*sys.argv[1:4]) else 0)
