"""Integrations with frameworks, each behind its own extra.

Nothing here is imported by :mod:`mailpool` itself: importing ``mailpool``
never needs a framework installed.
"""
