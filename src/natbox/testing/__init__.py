"""Helpers shared by natbox's test suite (packet builders, small labs, live-namespace tools, conformance readers).

They live in the package, not in folders put on sys.path by conftest files, so every test imports them by
one name (`natbox.testing.natpkt`, `natbox.testing.live`, ...) and mypy checks them with the rest of src/.
Nothing in natbox itself imports this package.
"""
