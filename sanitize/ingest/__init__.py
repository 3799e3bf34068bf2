"""Ingest: read a supplier's data, hash it, record its provenance and store it."""
