"""``python -m adpo.integrations.verl --config FILE [key=value ...]``: see :mod:`.launcher`."""

import sys

from adpo.cli._args import run_command
from adpo.integrations.verl.launcher import main

if __name__ == "__main__":
    raise SystemExit(run_command("python -m adpo.integrations.verl", main, sys.argv[1:]))
