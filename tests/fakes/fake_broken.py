"""A model package that fails to import."""

raise ImportError("this package needs a library that is not installed")
