"""Builds the Java side of the stack with Maven, once per source version.

Maven resolves Neo4j (with Neo4j Browser) and S3Proxy from Maven Central into ``~/.m2`` (the first
run downloads about 300 MB) and writes their runtime classpaths into the build dir; nothing is
compiled and nothing is written into the repository.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from graphmodel.stack.config import StackConfig, StackError

JAVA_SOURCES = Path(__file__).resolve().parent / "java"
STAMP = ".built"


@dataclass(frozen=True)
class JavaBuild:
    neo4j_classpath: str
    s3proxy_classpath: str
    s3proxy_logback: Path


def _fingerprint() -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in JAVA_SOURCES.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(JAVA_SOURCES)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _read_classpath(path: Path) -> list[str]:
    return [entry for entry in path.read_text().strip().split(":") if entry]


def _artifacts(build_dir: Path) -> JavaBuild:
    return JavaBuild(
        neo4j_classpath=":".join(_read_classpath(build_dir / "neo4j" / "classpath.txt")),
        s3proxy_classpath=":".join(_read_classpath(build_dir / "s3proxy" / "classpath.txt")),
        s3proxy_logback=JAVA_SOURCES / "s3proxy" / "logback.xml",
    )


def _complete(build_dir: Path, fingerprint: str) -> bool:
    """True when a previous build of these sources is intact (jars still in ~/.m2)."""
    stamp = build_dir / STAMP
    if not stamp.is_file() or stamp.read_text().strip() != fingerprint:
        return False
    try:
        build = _artifacts(build_dir)
    except OSError:
        return False
    entries = build.neo4j_classpath.split(":") + build.s3proxy_classpath.split(":")
    return all(Path(entry).exists() for entry in entries)


def ensure_built(cfg: StackConfig) -> JavaBuild:
    """Return the built artifacts, running Maven first when the sources changed or are missing."""
    build_dir = cfg.build_dir
    build_dir.mkdir(parents=True, exist_ok=True)
    fingerprint = _fingerprint()
    with open(build_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _complete(build_dir, fingerprint):
            _run_maven(cfg, build_dir)
            (build_dir / STAMP).write_text(fingerprint + "\n")
        return _artifacts(build_dir)


def _run_maven(cfg: StackConfig, build_dir: Path) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError(
            "Maven (`mvn`) is not on PATH; the local stack builds its Java side with it. Install "
            "Maven 3.8+ and Java 17 (Debian: apt-get install maven openjdk-17-jdk-headless), or "
            "run the services with Docker: docker compose -f docker/compose.yml up"
        )
    log_dir = cfg.state_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / "maven-build.log"
    print(
        "neurflow stack: building the Java side with Maven into "
        f"{build_dir} (the first build downloads Neo4j, Neo4j Browser and S3Proxy from Maven "
        f"Central into ~/.m2, a few minutes; log: {log_path})",
        file=sys.stderr,
        flush=True,
    )
    command = [mvn, "-B", "-f", str(JAVA_SOURCES / "pom.xml"), f"-Dstack.build={build_dir}"]
    started = time.monotonic()
    with open(log_path, "w") as log:
        result = subprocess.run(
            [*command, "package"], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    elapsed = time.monotonic() - started
    text = log_path.read_text(errors="replace")
    if result.returncode != 0:
        tail = "\n".join(text.splitlines()[-25:])
        raise StackError(
            f"the Maven build of the stack failed (exit {result.returncode}) after {elapsed:.0f} s; "
            f"full log: {log_path}\n{tail}"
        )
    downloads = text.count("Downloaded from")
    print(
        f"neurflow stack: Java side built in {elapsed:.0f} s "
        f"({downloads} files downloaded from Maven Central)",
        file=sys.stderr,
        flush=True,
    )
