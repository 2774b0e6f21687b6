"""Run galaxy-importer (what Galaxy and Automation Hub run on an upload) on the built
artifact with the settings of GALAXY_IMPORTER_CONFIG, and fail on any WARNING or ERROR it
logs (the artifact ships no ansible-test ignore file, on which the importer would warn).

    python tests/tools/galaxy_import.py ARTIFACT.tar.gz WORKDIR

galaxy-importer requires `repository` in the collection's metadata, which ansible-galaxy
does not: galaxy.yml names no repository until the collection has a public one (a URL that
cannot be known is not invented). Then the importer runs on a copy of the artifact whose
MANIFEST.json has the stand-in below, so that every other check still runs, and this
script says loudly that an upload needs `repository:` in galaxy.yml. With a repository in
galaxy.yml, the artifact is imported as built.
"""

import io
import json
import os
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path

STAND_IN = "https://repository.unknown.invalid/linux_audit/mail_alert"
FINDING = re.compile(r"^(WARNING|ERROR|CRITICAL)\b")


def with_repository(artifact: Path, workdir: Path) -> Path:
    """A copy of artifact whose MANIFEST.json names the stand-in repository."""
    # The importer takes namespace, name and version from the file's name.
    (workdir / "stand-in").mkdir(exist_ok=True)
    copy = workdir / "stand-in" / artifact.name
    with tarfile.open(artifact) as source, tarfile.open(copy, "w:gz") as target:
        for member in source.getmembers():
            data = source.extractfile(member) if member.isfile() else None
            if member.name == "MANIFEST.json":
                manifest = json.load(data)
                manifest["collection_info"]["repository"] = STAND_IN
                content = json.dumps(manifest, indent=4).encode()
                member.size = len(content)
                data = io.BytesIO(content)
            target.addfile(member, data)
    return copy


def main(artifact: Path, workdir: Path) -> int:
    workdir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(artifact) as source:
        manifest = json.load(source.extractfile("MANIFEST.json"))
    imported = artifact
    if not manifest["collection_info"].get("repository"):
        imported = with_repository(artifact, workdir)
    started = time.monotonic()
    env = dict(os.environ, ANSIBLE_LOCAL_TEMP=str(workdir / "tmp"))
    proc = subprocess.run([sys.executable, "-m", "galaxy_importer.main", str(imported.resolve())],
                          cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, check=False)
    (workdir / "importer.log").write_text(proc.stdout)
    lines = proc.stdout.splitlines()
    findings = [line for line in lines if FINDING.match(line)]
    if proc.returncode != 0 or findings:
        print(proc.stdout)
        print(f"galaxy-importer: rc {proc.returncode}; warnings and errors:", *findings, sep="\n  ", file=sys.stderr)
        return 1
    print(f"==> galaxy-importer: passed in {time.monotonic() - started:.0f} s "
          f"({artifact.name} imported, no warning)")
    if imported != artifact:
        print("galaxy-importer: NOTE: galaxy.yml names no repository, which Galaxy and Automation "
              f"Hub require: imported with the stand-in {STAND_IN}; an upload needs "
              "`repository:` in galaxy.yml")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
