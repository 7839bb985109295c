"""A throwaway PostgreSQL 15 cluster on 127.0.0.1 (initdb + pg_ctl), stopped by PID."""

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psycopg2

from gsv_pipelines.lib.core.processes import ServiceError, free_port

USER = "gsv"


def pg_bindir() -> Path:
    """PostgreSQL 15's bin folder: Debian keeps initdb and pg_ctl off PATH."""
    for candidate in sorted(glob.glob("/usr/lib/postgresql/15/bin")) + [
        str(Path(p).parent) for p in filter(None, [shutil.which("initdb")])
    ]:
        if (Path(candidate) / "initdb").is_file() and (Path(candidate) / "pg_ctl").is_file():
            return Path(candidate)
    raise ServiceError("PostgreSQL 15 is not installed (apt-get install postgresql-15)")


@dataclass
class Postgres:
    port: int
    root: Path
    bindir: Path
    # The superuser's password, when host connections check passwords (auth other than trust).
    password: str | None = None

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user={USER} dbname=postgres"

    @property
    def postmaster_pid(self) -> int:
        return int((self.root / "data" / "postmaster.pid").read_text().split()[0])

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql+psycopg2://{USER}@127.0.0.1:{self.port}/{dbname}"

    def connect(self, dbname: str = "postgres"):
        return psycopg2.connect(
            host="127.0.0.1", port=self.port, user=USER, dbname=dbname, password=self.password
        )

    def sql(self, dbname: str, sql: str, autocommit: bool = False) -> list:
        """Run `sql` in database `dbname` (committed); the rows it returns, if any."""
        conn = self.connect(dbname)
        conn.autocommit = autocommit
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                rows = cur.fetchall() if cur.description else []
            conn.commit()
            return rows
        finally:
            conn.close()

    def create_database(self, name: str) -> str:
        """A new, empty database `name` (CREATE DATABASE runs outside a transaction); its name."""
        self.sql("postgres", f"CREATE DATABASE {name}", autocommit=True)
        return name

    def stop(self) -> None:
        _as_owner([self.bindir / "pg_ctl", "-D", self.root / "data", "-m", "fast", "-w", "stop"])
        shutil.rmtree(self.root, ignore_errors=True)


def _as_owner(argv: list) -> subprocess.CompletedProcess:
    argv = [str(a) for a in argv]
    # PostgreSQL refuses to run as root: as root, run it as the `postgres` system user.
    if os.geteuid() == 0:
        argv = ["runuser", "-u", "postgres", "--", *argv]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ServiceError(f"{Path(argv[-1]).name}: {' '.join(argv)}\n{result.stderr[-2000:]}")
    return result


def start_postgres(auth: str = "trust", superuser_password: str | None = None) -> Postgres:
    """A cluster whose TCP connections use `auth` (e.g. "scram-sha-256": passwords are checked;
    the superuser then needs `superuser_password`). Unix-socket connections stay trusted."""
    if auth != "trust" and not superuser_password:
        raise ValueError(f"auth={auth!r} needs a superuser_password")
    bindir = pg_bindir()
    # Not under pytest's tmp dirs: those are root-only, and the server runs as `postgres`.
    root = Path(tempfile.mkdtemp(prefix="gsv-pg-"))
    owner = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
    if owner:
        os.chown(root, owner.pw_uid, owner.pw_gid)
    port = free_port()
    data = root / "data"
    initdb = [bindir / "initdb", "-D", data, "-U", USER, "-E", "UTF8"]
    if auth == "trust":
        _as_owner([*initdb, "--auth=trust"])
    else:
        pwfile = root / "superuser-password"
        pwfile.write_text(superuser_password + "\n")
        pwfile.chmod(0o600)
        if owner:
            os.chown(pwfile, owner.pw_uid, owner.pw_gid)
        try:
            _as_owner([*initdb, "--auth-local=trust", f"--auth-host={auth}", f"--pwfile={pwfile}"])
        finally:
            pwfile.unlink()
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off"
    _as_owner([bindir / "pg_ctl", "-D", data, "-l", root / "log", "-w", "-o", options, "start"])
    server = Postgres(port=port, root=root, bindir=bindir, password=superuser_password)
    with server.connect() as conn, conn.cursor() as cur:
        cur.execute("select 1")
    return server
