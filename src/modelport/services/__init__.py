"""Use cases: inference, admission, routing, metering, keys, accounts, catalog.

Services decide order, ids and timestamps. They see the `Backend` and `KeyStore` interfaces
only, never a concrete implementation, and import no web framework or database driver.
"""
