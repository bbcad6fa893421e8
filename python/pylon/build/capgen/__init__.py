"""Generated dynlink faces: from a cap's WIT interface, the cap's C dispatch
and the guest's Python proxy (docs/cap-interface.md)."""
