"""deepserve: serve machine-learning models behind a documented HTTP API."""

__version__ = "0.1.0"
