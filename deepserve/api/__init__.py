"""The HTTP layer: the only package that knows about aiohttp."""

from deepserve.api.app import create_app

__all__ = ["create_app"]
