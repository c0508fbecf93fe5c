"""Pieces shared by several stage kinds (formatting, checkpoint I/O, datasets)."""
