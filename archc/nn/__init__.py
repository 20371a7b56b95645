"""Torch modules the ops lower to, one file per op family (imports torch)."""
