"""``composectl``, Pylon's command line: the only package that imports typer and rich.

It drives the public API (:mod:`pylon.plan`, :mod:`pylon.blobstore`,
:mod:`pylon.trust`, :mod:`pylon.runtime`) and renders any
:class:`~pylon.errors.PylonError` once, on stderr, with exit code 2.

Modules: ``entry`` (the console script: a plain ``run`` goes straight to the
runtime, without typer or rich; everything else to ``main``), ``main`` (the
app and error rendering), ``progress`` (the fetch progress bar, reusable by
the runtime), ``console`` (the two consoles), and one module per command
group.
"""
