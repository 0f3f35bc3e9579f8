"""PLACEHOLDER — being written."""

from __future__ import annotations


class SQLStorage:
    def __init__(self, url: str) -> None:
        raise NotImplementedError
