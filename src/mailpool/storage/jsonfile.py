"""PLACEHOLDER — being written."""

from __future__ import annotations

from mailpool.storage.base import Storage


class JSONStorage:
    @classmethod
    def from_url(cls, url: str) -> Storage:
        raise NotImplementedError
