"""Plugins shipped with chatd.  Each uses only the public plugin API."""
