"""The base class of the errors clarena raises on purpose.

Every clarena distribution derives its own error classes from :class:`ClarenaError` (and from
the built-in class a caller would expect, e.g. ``ValueError``), so a front end such as the
``clarena`` command tells clarena's messages from other errors by type.
"""

from __future__ import annotations


class ClarenaError(Exception):
    """An error whose message names the problem and what to change."""
