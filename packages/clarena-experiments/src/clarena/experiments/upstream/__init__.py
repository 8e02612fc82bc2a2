"""Upstream CLArena's config trees, read by clarena with zero edits (or refused by name).

- :mod:`.aliases`: the one table of upstream ``_target_``s clarena answers, and those it refuses;
- :mod:`.adapter`: :func:`~.adapter.adapt_config`, called by every pipeline before anything is
  built;
- :mod:`.datasets`, :mod:`.weights`: upstream dataset classes and torchvision weight names.

See docs/coming-from-clarena.md.
"""
