"""Pack the plugin's package for one transfer to a target: the files named, relative to
SOURCE, into a gzipped tar at ARCHIVE, as root's 0644 files whatever they are here (the
controller's owner and umask do not reach the target). Run on the controller by the role
(tasks/plugin.yml) with the controller's own Python.

usage: pack_package.py SOURCE ARCHIVE NAME [NAME ...]
"""

import os
import sys
import tarfile


def main() -> None:
    source, archive, names = sys.argv[1], sys.argv[2], sys.argv[3:]
    with tarfile.open(archive, "w:gz") as tar:
        for name in names:
            path = os.path.join(source, name)
            info = tar.gettarinfo(path, arcname=name)
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mode = 0o644
            with open(path, "rb") as handle:
                tar.addfile(info, handle)


if __name__ == "__main__":
    main()
