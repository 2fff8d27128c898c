"""Helpers shared by the behaviour tests (importable as ``support``)."""
