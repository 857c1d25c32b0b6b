"""The papers' experiments as reproducible commands (``adpo bench …``)."""
