"""Prefect flows: thin wrappers that call the library's stages in order."""
