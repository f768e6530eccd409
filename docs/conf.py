"""Sphinx configuration for the rawepoll documentation site (``make docs``)."""

project = "rawepoll"
extensions = ["myst_parser"]
exclude_patterns = ["_build", "results"]
html_theme = "furo"
