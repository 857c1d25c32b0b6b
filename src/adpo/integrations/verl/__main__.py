"""``python -m adpo.integrations.verl --config FILE [key=value ...]``: see :mod:`.launcher`."""

from adpo.integrations.verl.launcher import main

if __name__ == "__main__":
    raise SystemExit(main())
