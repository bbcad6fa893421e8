"""Build tooling: turns our sources (cap C code, the guest app, WIT) into wasm.

Every step writes into ``paths.build_root()/<what>-<source hash>/`` so a rerun
with unchanged sources is a cache hit and a changed source is never served a
stale output.
"""
