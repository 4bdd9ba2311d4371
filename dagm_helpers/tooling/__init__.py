"""Tools for the project's maintainers, not for the lessons.

* :mod:`.series`: ``python -m dagm_helpers series``, the notebook series run headless into ``build/``;
* :mod:`.notebooks`: ``python -m dagm_helpers.tooling.notebooks strip|refresh``, the committed
  notebooks without outputs, and the references of the few outputs nbval compares.
"""
