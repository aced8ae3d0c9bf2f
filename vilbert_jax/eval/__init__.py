"""Evaluation that needs the model: scoring every caption against every image."""
