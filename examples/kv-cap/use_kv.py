"""Uses the kv example cap from a guest: `composectl run --plan kv-plan.json use_kv.py`."""

from pylon_guest import dynlink

kv = dynlink.load("kv").api          # the generated proxy, from the cap's pylon:shim section

with kv.Store() as store:            # a handle; closed (dropped in the cap) at the end of the block
    store.set("greeting", b"hello")
    store.set("answer", b"42")
    print(sorted(store.keys()), store.get("greeting"), store.get("missing"))

kept = kv.Store()                    # left open: the host releases it when the run ends
kept.set("k", b"v")
