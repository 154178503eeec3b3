"""Credentials for the cluster's tracking server, generated on the head node at setup time.

Nothing secret is written in cluster.yaml or the repository. `cluster.yaml` runs, on the head:

    python -m grid.cluster_secrets init --head-ip IP          # once; later runs keep what exists
    python -m grid.cluster_secrets postgres-sql | sudo -u postgres psql
    mlflow server --app-name basic-auth ...                   # with server.env in its environment
    python -m grid.cluster_secrets add-user                   # the user trials log as

`init` writes into `~/.arb` (mode 700, every file 600):

- `server.env`: for `mlflow server` only: the admin password (MLflow creates the admin user with it on first
  start), Flask's secret key (CSRF tokens must verify across the server's workers), the basic-auth config path and
  the PostgreSQL password file.
- `basic_auth.ini`: MLflow's basic-auth config; its user store is a PostgreSQL database next to the tracking one.
- `pgpass`: the `mlflow` PostgreSQL role's password in libpq's format (psycopg reads it through PGPASSFILE), so no
  database URI carries a password.
- `cluster/tracking.env`: MLFLOW_TRACKING_URI, MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD of the
  non-admin user `arb`. It is copied to the workers with the rest of `cluster/` (`cluster_synced_files`),
  where `ray start` runs with it in its environment, so trials get it the way MLflow's client looks for it,
  never through Ray's trial config, MLflow params or logs.
- `cluster/ray_auth_token` and `cluster/ray.env`: the cluster's Ray authentication token (Ray's own format, 256
  random bits in hex) and `RAY_AUTH_MODE=token` / `RAY_AUTH_TOKEN_PATH` pointing at it. Every node's `ray start`
  and the head's shell run with ray.env in their environment, so Ray's ports (GCS, dashboard, jobs) refuse any
  process that does not hold the token: Ray's security docs say that whoever reaches them can run code.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path

from trainables.errors import ArbError

TRIALS_USER = "arb"
ADMIN_USER = "admin"
PG_ROLE = "mlflow"
DATABASES = ("mlflow", "mlflow_auth")  # tracking store, basic-auth user store


def default_dir() -> Path:
    return Path.home() / ".arb"


def _write_private(path: Path, text: str) -> None:
    # Created with mode 600 from the start: a chmod after writing would leave a window where others can read it.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def read_env(path: Path) -> dict[str, str]:
    """The `NAME=value` lines of an env file written by `init`."""
    out = {}
    for line in path.read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            out[name.strip()] = value.strip()
    return out


def init(
    directory: Path, *, head_ip: str, port: int = 5000, postgres: str = "localhost:5432", auth_db: str | None = None
) -> None:
    """Generate the head's secrets into `directory`, keeping any that exist (a re-run of `ray up` must not change
    passwords that PostgreSQL and MLflow already hold). `auth_db`: the basic-auth user store's SQLAlchemy URI when
    it is not the PostgreSQL database next to the tracking one (deploy/slurm keeps it in SQLite on the shared
    filesystem)."""
    cluster = directory / "cluster"
    cluster.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    cluster.chmod(0o700)
    pgpass = directory / "pgpass"
    if not pgpass.exists():
        _write_private(pgpass, f"*:*:*:{PG_ROLE}:{secrets.token_urlsafe(24)}\n")
    ini = directory / "basic_auth.ini"
    if not ini.exists():
        _write_private(
            ini,
            "[mlflow]\n"
            "# Users other than the admin may read every experiment; write access follows from who created it.\n"
            "default_permission = READ\n"
            f"database_uri = {auth_db or f'postgresql://{PG_ROLE}@{postgres}/{DATABASES[1]}'}\n"
            f"admin_username = {ADMIN_USER}\n",
        )
    server_env = directory / "server.env"
    if not server_env.exists():
        _write_private(
            server_env,
            f"MLFLOW_AUTH_ADMIN_PASSWORD={secrets.token_urlsafe(24)}\n"
            f"MLFLOW_FLASK_SERVER_SECRET_KEY={secrets.token_urlsafe(32)}\n"
            f"MLFLOW_AUTH_CONFIG_PATH={ini}\n"
            f"PGPASSFILE={pgpass}\n",
        )
    tracking_env = cluster / "tracking.env"
    if not tracking_env.exists():
        _write_private(
            tracking_env,
            f"MLFLOW_TRACKING_URI=http://{head_ip}:{port}\n"
            f"MLFLOW_TRACKING_USERNAME={TRIALS_USER}\n"
            f"MLFLOW_TRACKING_PASSWORD={secrets.token_urlsafe(24)}\n",
        )
    write_ray_token(cluster)


def ray_token() -> str:
    """A new Ray authentication token in Ray's own format (`ray get-auth-token --generate`: 256 random bits, hex)."""
    return secrets.token_hex(32)


def write_ray_token(directory: Path) -> Path:
    """`ray_auth_token` and `ray.env` in `directory`, kept if they exist (running nodes hold the token); returns
    the env file. The token file's path is absolute: Ray does not expand `~` in RAY_AUTH_TOKEN_PATH."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    token = directory / "ray_auth_token"
    if not token.exists():
        _write_private(token, ray_token())
    env = directory / "ray.env"
    if not env.exists():
        _write_private(env, f"RAY_AUTH_MODE=token\nRAY_AUTH_TOKEN_PATH={token.resolve()}\n")
    return env


K8S_SECRETS = {  # Secret name → what it holds; deploy/kuberay reads them by these names, never their values
    "arb-postgres": "POSTGRES_PASSWORD: the PostgreSQL superuser's password (the postgres image reads it)",
    "arb-mlflow-server": "the tracking server's admin password, Flask secret key and database password",
    "arb-tracking": "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD of the non-admin user trials log as",
    "arb-ray-token": "auth_token: the Ray cluster's token (KubeRay's authOptions.secretName reads this key)",
}


def k8s_secrets(namespace: str) -> str:
    """Kubernetes Secret manifests with freshly generated values, for `kubectl apply -f -` (deploy/kuberay): the
    values go from this process's stdout to the API server and are never written to a file. Run once per
    namespace; a second run would change passwords that PostgreSQL and MLflow already hold."""
    import json

    pg = secrets.token_urlsafe(24)
    values = {
        "arb-postgres": {"POSTGRES_PASSWORD": pg},
        "arb-mlflow-server": {
            "MLFLOW_AUTH_ADMIN_PASSWORD": secrets.token_urlsafe(24),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_urlsafe(32),
            "PGPASSWORD": pg,  # libpq reads it: no password in a database URI
        },
        "arb-tracking": {
            "MLFLOW_TRACKING_USERNAME": TRIALS_USER,
            "MLFLOW_TRACKING_PASSWORD": secrets.token_urlsafe(24),
        },
        "arb-ray-token": {"auth_token": ray_token()},
    }
    docs = [
        {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "stringData": data,
         "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/part-of": "arb"}}}
        for name, data in values.items()
    ]  # fmt: skip
    return "".join(f"---\n{json.dumps(doc, indent=2)}\n" for doc in docs)  # JSON is YAML: kubectl reads it


def add_trials_user_from_env(tracking_uri: str) -> None:
    """`add-user` inside Kubernetes: the admin's and the trials' credentials come from the environment (the Secrets
    of `k8s-secrets`), not from files."""
    trials_user = os.environ["MLFLOW_TRACKING_USERNAME"]
    trials_password = os.environ["MLFLOW_TRACKING_PASSWORD"]
    admin_password = os.environ["MLFLOW_AUTH_ADMIN_PASSWORD"]
    _create_or_reset(tracking_uri, admin_password, trials_user, trials_password)


def pg_password(directory: Path) -> str:
    return (directory / "pgpass").read_text().strip().rsplit(":", 1)[1]


def postgres_sql(directory: Path) -> str:
    """SQL for `psql` as the superuser: the `mlflow` role with the generated password, and both databases.
    Safe to run again; it resets the role's password to the one on file."""
    password = pg_password(directory)  # token_urlsafe: letters, digits, '-', '_': nothing to escape
    lines = [
        f"SELECT 'CREATE ROLE {PG_ROLE} LOGIN' WHERE NOT EXISTS "
        f"(SELECT 1 FROM pg_roles WHERE rolname = '{PG_ROLE}')\\gexec",
        f"ALTER ROLE {PG_ROLE} WITH LOGIN PASSWORD '{password}';",
    ]
    for db in DATABASES:
        lines.append(
            f"SELECT 'CREATE DATABASE {db} OWNER {PG_ROLE}' WHERE NOT EXISTS "
            f"(SELECT 1 FROM pg_database WHERE datname = '{db}')\\gexec"
        )
        # a database made earlier by someone else: the role needs its public schema (owned by the database owner)
        lines.append(f"ALTER DATABASE {db} OWNER TO {PG_ROLE};")
    return "\n".join(lines) + "\n"


def add_trials_user(directory: Path, tracking_uri: str | None = None) -> None:
    """Create (or reset the password of) the non-admin user whose credentials are in `cluster/tracking.env`."""
    trials = read_env(directory / "cluster" / "tracking.env")
    admin_password = read_env(directory / "server.env")["MLFLOW_AUTH_ADMIN_PASSWORD"]
    uri = tracking_uri or trials["MLFLOW_TRACKING_URI"]
    _create_or_reset(uri, admin_password, trials["MLFLOW_TRACKING_USERNAME"], trials["MLFLOW_TRACKING_PASSWORD"])


def _create_or_reset(uri: str, admin_password: str, user: str, password: str) -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.server.auth.client import AuthServiceClient

    # MLflow's auth client reads the caller's credentials from the environment only; this process is the admin.
    os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = ADMIN_USER, admin_password
    client = AuthServiceClient(uri)
    try:
        client.create_user(user, password)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise ArbError(
                f"creating MLflow user {user!r} at {uri} failed: {exc.message[:200]}",
                "check that the tracking server runs with --app-name basic-auth and server.env",
            ) from None
        client.update_user_password(user, password)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grid.cluster_secrets", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=default_dir(), help="where the secrets live (default ~/.arb)")
    sub = parser.add_subparsers(dest="command", required=True)
    p_init = sub.add_parser("init", help="generate the secrets once")
    p_init.add_argument("--head-ip", required=True, help="the head's private address, as workers reach it")
    p_init.add_argument("--port", type=int, default=5000, help="the tracking server's port")
    p_init.add_argument("--postgres", default="localhost:5432", help="HOST:PORT of PostgreSQL on the head")
    p_init.add_argument("--auth-db", help="the basic-auth user store's URI (default: PostgreSQL's mlflow_auth)")
    sub.add_parser("postgres-sql", help="print the SQL that creates the role and databases (pipe it into psql)")
    p_user = sub.add_parser("add-user", help="create the trials' MLflow user (the server must be up)")
    p_user.add_argument("--tracking-uri", help="default: the URI in cluster/tracking.env")
    p_k8s = sub.add_parser(
        "k8s-secrets",
        help="print generated Kubernetes Secrets (pipe into kubectl apply -f -): "
        + "; ".join(f"{name}: {what}" for name, what in K8S_SECRETS.items()),
    )
    p_k8s.add_argument("--namespace", default="arb", help="the namespace of deploy/kuberay (default arb)")
    p_env = sub.add_parser("add-user-from-env", help="add-user with credentials from the environment (Kubernetes)")
    p_env.add_argument("--tracking-uri", required=True)
    p_ray = sub.add_parser("ray-token", help="only the Ray token and ray.env, into a directory of your choice")
    p_ray.add_argument("target", type=Path, help="e.g. a private directory on the shared filesystem (SLURM)")
    args = parser.parse_args(argv)
    try:
        if args.command == "init":
            init(args.dir, head_ip=args.head_ip, port=args.port, postgres=args.postgres, auth_db=args.auth_db)
        elif args.command == "k8s-secrets":
            sys.stdout.write(k8s_secrets(args.namespace))
        elif args.command == "add-user-from-env":
            add_trials_user_from_env(args.tracking_uri)
        elif args.command == "ray-token":
            print(write_ray_token(args.target))
        elif args.command == "postgres-sql":
            sys.stdout.write(postgres_sql(args.dir))
        else:
            add_trials_user(args.dir, args.tracking_uri)
    except ArbError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (OSError, KeyError) as exc:
        print(f"error: {exc!r} in {args.dir}; fix: run `python -m grid.cluster_secrets init` first", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
