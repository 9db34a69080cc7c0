"""A DEEPaaS V2 model package shaped like the AI4OS templates."""
