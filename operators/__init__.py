"""Pure per-item logic: plain functions and classes, no Bytewax import, time passed in.

Each operator takes state (if any) and an item and returns new state and outputs; ``flows/``
wraps them in Bytewax steps.
"""
