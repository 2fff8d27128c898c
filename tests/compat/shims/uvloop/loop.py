"""``uvloop.loop`` of the stand-in: only the Loop class (what suites probe for features)."""

from ferroloop import Loop

__all__ = ["Loop"]
