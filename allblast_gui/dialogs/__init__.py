"""Dialogs every feature shares (Help); a feature's own dialogs live in its folder."""
