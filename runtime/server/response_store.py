"""The Responses API's memory: the last responses this server made, so that a request may continue one
with `previous_response_id` and `GET /v1/responses/{id}` can fetch one.

Kept in memory only, and bounded: a server that runs for weeks must not grow without end, and a local
server has no database to put them in. The oldest is forgotten first; a restart forgets them all.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

# The README says this number: keep the two in step.
MAX_STORED_RESPONSES = 100


@dataclass(frozen=True)
class StoredResponse:
    # The Responses API object, as it was answered.
    response: dict[str, Any]
    # The conversation up to and including this response's output, as chat-completions messages
    # (without the request's instructions: OpenAI does not carry them over to the next response).
    history: tuple[dict[str, Any], ...]


class ResponseStore:
    def __init__(self, limit: int = MAX_STORED_RESPONSES) -> None:
        self.limit = limit
        self._items: OrderedDict[str, StoredResponse] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, response_id: str, stored: StoredResponse) -> None:
        with self._lock:
            self._items[response_id] = stored
            self._items.move_to_end(response_id)
            while len(self._items) > self.limit:
                self._items.popitem(last=False)

    def get(self, response_id: str) -> StoredResponse | None:
        with self._lock:
            return self._items.get(response_id)

    def delete(self, response_id: str) -> bool:
        with self._lock:
            return self._items.pop(response_id, None) is not None

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
