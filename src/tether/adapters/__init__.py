"""Agents written with other frameworks, served as tether agents with one call each.

Each adapter is its own module behind its own optional extra (``pip install
'tether[pydantic-ai]'``), so that tether itself never imports a framework.
"""
