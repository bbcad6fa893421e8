"""Pylon inside the guest: the pieces a script running in pylon.wasm can use.

* ``pylon_guest.dynlink``: load caps at run time by name (``load(name)``).
* ``pylon_guest.caps.<name>``: a cap's typed shim, when it ships one.

This is the guest's own package, named ``pylon_guest`` so that ``pylon``
means one thing: the host's ``pylon`` (CLI, plan, engine, ``pylon.Sandbox``)
is a different code base that never runs in here.
"""
