"""Offline preprocessing tools (video compression)."""
