"""``import pylon_guest.caps.<name>`` loads a cap by dynlink and gives its shim.

The shim is Python source the cap ships inside its own component, so a cap
the guest has never seen still gets a typed API without a guest rebuild. A
cap without a shim comes back as a module whose ``cap`` attribute is the
:class:`pylon_guest.dynlink.Cap` (``invoke`` and ``call`` are re-exported).
"""

import importlib.abc
import importlib.util
import sys
import types

from pylon_guest import dynlink


class _CapLoader(importlib.abc.Loader):
    def create_module(self, spec):
        cap = dynlink.load(spec.name.rsplit(".", 1)[1])
        module = cap.api
        if module is None:
            module = types.ModuleType(spec.name)
            module.cap = cap
            module.invoke = cap.invoke
            module.call = cap.call
        return module

    def exec_module(self, module):
        pass


class _CapFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.startswith(__name__ + ".") and fullname.count(".") == 2:
            return importlib.util.spec_from_loader(fullname, _CapLoader())
        return None


if not any(isinstance(f, _CapFinder) for f in sys.meta_path):
    sys.meta_path.append(_CapFinder())
