"""``deepserve call``: a model's methods from the shell, without a server.

The counterpart of DEEPaaS's ``deepaas-cli`` (also installed under the name
``deepserve-cli``): ``get_metadata``, ``warm``, ``predict`` and ``train``
of an installed model, with options generated from the model's own
argument fields.
"""

from __future__ import annotations

from deepserve.shell.command import deepserve_cli, main

__all__ = ["deepserve_cli", "main"]
