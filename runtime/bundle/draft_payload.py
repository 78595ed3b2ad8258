"""The draft model an executable carries (`llmpack build --draft`): the manifest's "draft" records its
offset, length and sha256 inside the executable, and llama.cpp reads it in place from there as it reads
the weights (a FILE* at an offset: runtime/engine/draft_model.py); where in-place loading is not
supported it is copied once into the cache, named by its sha256. -md FILE wins over it; -m other weights
leave it out (a draft belongs to the vocabulary of the model it was built with); --verify re-hashes it."""

from __future__ import annotations

import dataclasses
import logging
import os

from .. import messages
from ..engine.native import in_place_loading_supported
from ..engine.types import DraftConfig, EngineConfig
from ..errors import UsageError, UserError
from ..flags.settings import Settings
from .payload_format import Payload
from .projector import EmbeddedProjector, embedded_projector, projector_file, verify

log = logging.getLogger(__name__)
DRAFT_MISSING = "-md {path}: no such file"


def with_draft(settings: Settings, payload: Payload | None, config: EngineConfig) -> EngineConfig:
    """-md's draft model (plan.py made its DraftConfig), else the carried one, unless -m names other
    weights; --spec-type draft-simple without either is refused."""
    if config.draft is not None:
        if not os.path.isfile(config.draft.path):
            raise UserError(DRAFT_MISSING.format(path=config.draft.path))
        return config
    carried = None if settings.model else embedded_draft(payload)
    if carried is None:
        if "draft-simple" in settings.spec_type:
            raise UsageError(messages.DRAFT_SIMPLE_WITHOUT_MODEL)
        return config
    if settings.verify:
        verify(carried, "draft model")
    if in_place_loading_supported():
        path, offset = carried.path, carried.offset
    else:
        path, offset = str(projector_file(carried, "draft")), 0
    return dataclasses.replace(config, draft=DraftConfig(path, offset, settings.draft_max, settings.draft_min,
                                                         settings.draft_p_min, settings.gpu_layers_draft))


def embedded_draft(payload: Payload | None) -> EmbeddedProjector | None:
    return embedded_projector(payload, "draft")
