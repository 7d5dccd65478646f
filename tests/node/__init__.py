"""The real node itself (see tests/harness/node.py)."""
