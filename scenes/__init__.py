"""Manim scenes that replay recorded runs of the real PagedCache and Scheduler (astrai.trace)."""
