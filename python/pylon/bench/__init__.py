"""``composectl bench CAP``: a cap measured in each linkage mode it has.

* :mod:`pylon.bench.measure`: finds the cap, runs each mode (the cap's
  ``[dynlink]``, ``[embedded]`` and ``[static]`` faces, calling what its
  ``[bench]`` table says), returns every figure as a JSON-ready dict;
* :mod:`pylon.bench.report`: the seed's "choosing between them" table with
  the figures, throughput table, Markdown, plot;
* :mod:`pylon.bench.timing`, :mod:`pylon.bench.guest_driver`: the timing
  loop and the script that run inside the guest;
* :mod:`pylon.bench.data`: the payload (deterministic JSON-lines text).

See docs/choosing.md for the figures and docs/caps.md ("Benchmarks") for
the ``[bench]`` table.
"""
