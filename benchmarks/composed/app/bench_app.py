"""componentize-py app of the benchmarks' composed guest.

The stock app (guest/app.py) plus the bindings of the extra
``compose:dynlink/provider`` import, imported here at build time so
componentize-py bundles them: scripts reach the plugged-in cap as
``wit_world.imports.provider.invoke(method, payload)``.
"""

from app import Entry, Run  # noqa: F401  (the stock exports: pre-imports, lazy modules, runner)
from wit_world.imports import provider  # noqa: F401
