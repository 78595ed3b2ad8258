"""GGUF weights from the Hugging Face hub, through huggingface-hub's own download code, so its cache
(`HF_HOME`, `HF_HUB_CACHE`), token (`HF_TOKEN`), offline mode (`HF_HUB_OFFLINE`), endpoint
(`HF_ENDPOINT`) and progress bar all work as users know them from `hf download` and llama.cpp's
`--hf-repo`/`--hf-file`.

A split GGUF's later parts are fetched at the commit its first part resolved to, so every part comes
from one commit even if the branch moves during a long download. Failures become one line each, chosen
by huggingface-hub's exception types, never by its messages.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

import httpx2
from huggingface_hub import constants, get_token, hf_hub_download, is_offline_mode
from huggingface_hub.errors import (
    DisabledRepoError,
    FileMetadataError,
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import (
    are_progress_bars_disabled,
    disable_progress_bars,
    enable_progress_bars,
    validate_repo_id,
)

from . import messages
from .errors import BuildError
from .gguf_split import check_first_part

log = logging.getLogger(__name__)
DEFAULT_ENDPOINT = "https://huggingface.co"


@dataclass(frozen=True)
class Fetched:
    paths: list[Path]  # in huggingface-hub's cache: the GGUF, or a split GGUF's parts in order
    source: dict[str, Any]  # the manifest's model.source


def fetch_gguf(repo: str, filename: str, revision: str | None, *, quiet: bool = False) -> Fetched:
    """Downloads `filename` (all its parts, for the first part of a split GGUF) from `repo` at
    `revision` (default: the main branch) into huggingface-hub's cache, or finds it there."""
    try:
        validate_repo_id(repo)
    except HFValidationError:
        raise BuildError(messages.HF_BAD_REPO.format(repo=repo)) from None
    path = PurePosixPath(filename)
    if not filename or path.is_absolute() or ".." in path.parts or "\\" in filename:
        raise BuildError(messages.HF_BAD_FILE.format(file=filename))
    names = check_first_part(filename, filename) or [filename]
    endpoint = constants.ENDPOINT
    current = filename
    try:
        with _library_quiet(hide_progress=quiet):
            first = Path(hf_hub_download(repo_id=repo, filename=filename, revision=revision))
            # The download recorded which commit the revision named (refs/ in the cache); read it back
            # without the network, so that later parts and the manifest name that exact commit.
            commit = hf_hub_download(repo_id=repo, filename=filename, revision=revision, local_files_only=True,
                                     dry_run=True).commit_hash
            paths = [first]
            for current in names[1:]:
                paths.append(Path(hf_hub_download(repo_id=repo, filename=current, revision=commit)))
    except Exception as exc:
        error = _user_error(exc, repo, current, revision, endpoint)
        if error is None:
            raise
        raise error from None
    log.info("weights: %s%s from %s/%s at commit %s", filename,
             f" and its {len(paths) - 1} other parts" if len(paths) > 1 else "", endpoint, repo, commit)
    source: dict[str, Any] = {"type": "huggingface", "repo": repo, "file": filename, "revision": commit}
    if len(paths) > 1:
        source["parts"] = len(paths)
    if endpoint != DEFAULT_ENDPOINT:
        source["endpoint"] = endpoint
    return Fetched(paths, source)


@contextlib.contextmanager
def _library_quiet(hide_progress: bool) -> Iterator[None]:
    """huggingface-hub logs a warning per retry (an unreachable hub gives a dozen lines) and httpx2 a line
    per request; the build reports the outcome itself, in one line, so only their errors are let through.
    The progress bar stays (on a terminal) unless `hide_progress`."""
    loggers = [logging.getLogger(name) for name in ("huggingface_hub", "httpx2")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    silence = hide_progress and not are_progress_bars_disabled()
    if silence:
        disable_progress_bars()
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
        if silence:
            enable_progress_bars()


def _user_error(exc: Exception, repo: str, filename: str, revision: str | None,
                endpoint: str) -> BuildError | None:
    """The one line a user sees for what huggingface-hub raised; None for an unexpected error (a bug,
    shown with its traceback)."""
    shown = {"repo": repo, "file": filename, "revision": revision or constants.DEFAULT_REVISION,
             "endpoint": endpoint}
    # Subclasses first: GatedRepoError is a RepositoryNotFoundError, all of them HfHubHTTPErrors.
    if isinstance(exc, GatedRepoError):
        return BuildError(messages.HF_GATED.format(**shown))
    if isinstance(exc, (RepositoryNotFoundError, HfHubHTTPError)) and _status(exc) in (401, 403):
        # The hub answers 401 for private, gated and (to anonymous users) absent repositories alike.
        refused = messages.HF_TOKEN_REFUSED if get_token() else messages.HF_NEEDS_TOKEN
        return BuildError(refused.format(status=_status(exc), **shown))
    if isinstance(exc, RepositoryNotFoundError):
        return BuildError(messages.HF_REPO_NOT_FOUND.format(**shown))
    if isinstance(exc, RevisionNotFoundError):
        return BuildError(messages.HF_REVISION_NOT_FOUND.format(**shown))
    if isinstance(exc, RemoteEntryNotFoundError):
        return BuildError(messages.HF_FILE_NOT_FOUND.format(**shown))
    if isinstance(exc, DisabledRepoError):
        return BuildError(messages.HF_DISABLED.format(**shown))
    if isinstance(exc, LocalEntryNotFoundError):
        if is_offline_mode():
            return BuildError(messages.HF_OFFLINE_NOT_CACHED.format(cache=constants.HF_HUB_CACHE, **shown))
        return BuildError(messages.HF_UNREACHABLE.format(reason=_unreachable_reason(exc.__cause__), **shown))
    if isinstance(exc, HfHubHTTPError):
        return BuildError(messages.HF_HTTP_ERROR.format(status=_status(exc), **shown))
    if isinstance(exc, httpx2.TimeoutException):
        return BuildError(messages.HF_DOWNLOAD_FAILED.format(reason="the hub stopped answering", **shown))
    if isinstance(exc, httpx2.TransportError):
        return BuildError(messages.HF_DOWNLOAD_FAILED.format(reason=_first_line(exc) or "connection lost", **shown))
    if isinstance(exc, OSError):  # the cache's disk full or unwritable, or a size mismatch after retries
        return BuildError(messages.HF_DOWNLOAD_FAILED.format(reason=exc.strerror or _first_line(exc), **shown))
    return None


def _status(exc: Exception) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _unreachable_reason(cause: BaseException | None) -> str:
    if isinstance(cause, httpx2.TimeoutException):
        return "timed out"
    if isinstance(cause, httpx2.TransportError):
        return "no connection"
    if isinstance(cause, HfHubHTTPError):
        return f"it answered HTTP {_status(cause)}"
    if isinstance(cause, FileMetadataError):
        return "it does not answer like a Hugging Face hub"
    return type(cause).__name__ if cause else "no answer"


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else ""


def list_files(repo: str, commit: str | None, snapshot: Path | None) -> list[str]:
    """The repository's files at `commit`, for finding its projector: the hub's listing, or offline
    (HF_HUB_OFFLINE) what huggingface-hub's cache holds of that commit (`snapshot`: its folder)."""
    if is_offline_mode():
        return sorted(p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*.gguf")) if snapshot else []
    from huggingface_hub import HfApi

    try:
        with _library_quiet(hide_progress=True):
            return sorted(HfApi().list_repo_files(repo, revision=commit))
    except Exception as exc:
        error = _user_error(exc, repo, "(the file list)", commit, constants.ENDPOINT)
        if error is None:
            raise
        raise error from None
