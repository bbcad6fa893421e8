"""``python -m pylon.cli`` is ``composectl``."""

from pylon.cli.main import main

main()
