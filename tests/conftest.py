"""Shared fixtures: chatd's own test kit (``chatd.testing``) is used throughout."""

pytest_plugins = ["chatd.testing"]
