"""`--server`: the OpenAI-compatible HTTP server. (Being built: issue 4.)"""

from __future__ import annotations

from . import messages
from .errors import UserError
from .payload import Payload
from .settings import Settings


def run(settings: Settings, payload: Payload | None) -> int:
    raise UserError(messages.MODE_NOT_AVAILABLE.format(mode="--server"))
