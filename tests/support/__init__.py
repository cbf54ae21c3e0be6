"""Helpers the tests share, imported as ``from support.<module> import ...``."""
