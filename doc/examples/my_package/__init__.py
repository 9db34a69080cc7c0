"""Two example models for deepserve."""
