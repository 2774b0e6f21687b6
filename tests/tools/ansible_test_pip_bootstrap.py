"""Offline stand-in for ansible-test's pip bootstrap script (get-pip-<version>.py).

ansible-test creates its sanity and units virtual environments without pip and then runs a
get-pip script that it downloads from ci-files.testing.ansible.com. CI here reaches PyPI but
not that host; ansible-test's own error message says to save the script in its cache path,
and this file is what `make` saves there. It bootstraps the pip bundled with Python
(ensurepip) and lets that pip install what ansible-test asked for (e.g. pip==24.2) from PyPI.
"""

import ensurepip
import runpy
import sys

# get-pip options that plain `pip install` does not know.
GET_PIP_ONLY_OPTIONS = ("--no-setuptools", "--no-wheel")


def main() -> None:
    """Install pip into the running interpreter, then the requested packages."""
    requested = [arg for arg in sys.argv[1:] if arg not in GET_PIP_ONLY_OPTIONS]
    ensurepip.bootstrap(upgrade=True)
    sys.argv = ["pip", "install", "--upgrade"] + requested
    runpy.run_module("pip", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
