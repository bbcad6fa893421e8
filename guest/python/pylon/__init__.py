"""Pylon inside the guest: the pieces a script running in pylon.wasm can use.

* ``pylon.dynlink``: load caps at run time by name (``load(name)``).
* ``pylon.caps.<name>``: a cap's typed shim, when it ships one.

This is the guest's own package; the host's ``pylon`` (CLI, plan, engine)
is a different code base that never runs in here.
"""
