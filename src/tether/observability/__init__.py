"""What an operator sees of a running server: metrics, traces and logs.

A leaf layer: every other layer may record into it, it imports none of them.
"""
