"""``python -m tether``: the ``tether`` command, for when the console script is not on PATH."""

from tether.cli.main import main

main(prog_name="tether")
