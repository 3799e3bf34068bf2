"""Evaluation: red-team poisonings and the figures that measure detection and cleaning."""
