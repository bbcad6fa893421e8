"""``python -m pylon.cli`` is ``composectl``."""

from pylon.cli.entry import main

main()
