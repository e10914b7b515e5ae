"""Pure domain: canonical types, events, errors, catalog and money. No I/O, no frameworks."""
