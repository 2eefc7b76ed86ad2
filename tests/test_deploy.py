"""The deployment files agree with what they deploy (docs/deployment.md): compose.yaml and .env.example with the
Makefile and config/settings.py, the Dockerfile with the Makefile's `serve`.

These are file checks: no Docker engine is needed, and none is on this project's machines, so the image is never
built here. Where the docker CLI has the compose plugin, test_docker_compose_config also runs
`docker compose config --quiet`; where it has not (a docker CLI without engine or compose plugin, as here), that
test still runs its own checks and says in its assertion message, and in a warning, that the CLI step did not run.
PyYAML comes with drf-spectacular, one of the project's pinned dependencies.
"""
import ast
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from urllib.parse import urlsplit

import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "compose.yaml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
MAKEFILE = ROOT / "Makefile"
SETTINGS = ROOT / "config" / "settings.py"

PROCESSES = {"web": "serve", "worker": "worker", "beat": "beat"}

# Variables whose default is for development only: a production deployment that leaves one unset is broken or
# unsafe, so .env.example sets each of them (not merely lists it).
PRODUCTION_MUST_SET = {
    "DJANGO_DEBUG": "defaults to on: debug pages, no secure cookies, no HSTS",
    "DJANGO_SECRET_KEY": "no default with DEBUG off: every process refuses to start",
    "DJANGO_ALLOWED_HOSTS": "empty with DEBUG off: every request is a 400",
    "DATABASE_URL": "defaults to an SQLite file inside the container",
    "REDIS_URL": "without it tasks run in-process and rate limits and spend holds are per process",
    "AWS_STORAGE_BUCKET_NAME": "without it images go to the container's own disk, which web hosts do not share",
    "EMAIL_URL": "defaults to smtp://localhost:25 with DEBUG off, which a container does not have",
}

# Announced by issue 12 and listed (commented) in .env.example before config/settings.py reads them.
ANNOUNCED = {"METRICS_TOKEN", "LOG_FORMAT"}


# --- readers -------------------------------------------------------------------------------------------------------

def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def services() -> dict:
    return compose()["services"]


def command(service: dict) -> list[str]:
    cmd = service.get("command")
    return shlex.split(cmd) if isinstance(cmd, str) else list(cmd or [])


def environment(service: dict) -> dict:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return {k: (None if v is None else str(v)) for k, v in env.items()}


def env_files(service: dict) -> list[str]:
    files = service.get("env_file") or []
    files = [files] if isinstance(files, (str, dict)) else files
    return [f["path"] if isinstance(f, dict) else f for f in files]


def container_ports(service: dict) -> set[int]:
    ports = set()
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            ports.add(int(port["target"]))
        else:
            ports.add(int(str(port).split("/")[0].rsplit(":", 1)[-1]))
    return ports


def published(service: dict) -> dict[int, int]:
    """container port -> host port"""
    out = {}
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            out[int(port["target"])] = int(port.get("published") or port["target"])
        else:
            parts = str(port).split("/")[0].split(":")
            out[int(parts[-1])] = int(parts[-2] if len(parts) > 1 else parts[-1])
    return out


def env_example() -> tuple[dict, dict]:
    """(active NAME=value lines, commented `# NAME=value` lines) of .env.example."""
    active, commented = {}, {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if m := re.fullmatch(r"([A-Z][A-Z0-9_]*)=(.*)", line):
            assert m[1] not in active, f".env.example sets {m[1]} twice"
            active[m[1]] = m[2]
        elif m := re.fullmatch(r"#\s*([A-Z][A-Z0-9_]*)=(.*)", line):
            commented[m[1]] = m[2]
    return active, commented


def settings_reads() -> dict[str, bool]:
    """Every variable config/settings.py reads through django-environ (env.str("NAME", ...), env.db(...), ...) ->
    whether every such read has a default."""
    reads: dict[str, bool] = {}
    for node in ast.walk(ast.parse(SETTINGS.read_text())):
        if not (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)):
            continue
        func = node.func
        if (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "env") or (
                isinstance(func, ast.Name) and func.id == "env"):
            has_default = any(k.arg == "default" for k in node.keywords)
            name = node.args[0].value
            reads[name] = reads.get(name, True) and has_default
    return reads


def makefile_targets() -> set[str]:
    return {m[1] for m in re.finditer(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", MAKEFILE.read_text(), re.M)}


def makefile_defaults() -> dict[str, str]:
    return {m[1]: m[2].strip() for m in re.finditer(r"^([A-Z_][A-Z0-9_]*)\s*\?=\s*(.*)$", MAKEFILE.read_text(), re.M)}


def makefile_recipe(target: str) -> str:
    m = re.search(rf"^{re.escape(target)}\s*:[^\n]*\n((?:\t[^\n]*\n?)*)", MAKEFILE.read_text(), re.M)
    assert m, f"the Makefile has no {target} target"
    return m[1]


def serve_variables() -> set[str]:
    """The environment variables `make serve` reads: the ?= defaults its recipe uses (HOST, PORT, WEB_CONCURRENCY)."""
    used = set(re.findall(r"\$\(([A-Z_][A-Z0-9_]*)\)", makefile_recipe("serve")))
    return used & set(makefile_defaults())


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    out, pending = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        keyword, _, args = full.partition(" ")
        out.append((keyword.upper(), args.strip()))
    return out


def stages() -> list[list[tuple[str, str]]]:
    result = []
    for instruction in dockerfile_instructions():
        if instruction[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(instruction)
    return result


# --- compose.yaml ----------------------------------------------------------------------------------------------------

def test_compose_has_every_production_service():
    s = services()
    for name in ("web", "worker", "beat", "db", "redis", "s3", "migrate"):
        assert name in s, f"compose.yaml has no {name} service"
    assert s["db"]["image"].startswith("postgres:15"), s["db"]["image"]
    assert s["redis"]["image"].startswith("redis:7"), s["redis"]["image"]
    assert "minio/minio" in s["s3"]["image"], s["s3"]["image"]
    # A one-shot service creates the bucket the app uses, once MinIO is up, before the processes start.
    bucket_makers = [name for name, svc in s.items() if "mc mb" in " ".join(command(svc))]
    assert len(bucket_makers) == 1, bucket_makers
    maker = s[bucket_makers[0]]
    assert "AWS_STORAGE_BUCKET_NAME" in " ".join(command(maker)) and ".env.example" in env_files(maker)
    assert maker["depends_on"]["s3"]["condition"] == "service_healthy"
    assert maker.get("restart") == "no"
    for name in PROCESSES:
        assert s[name]["depends_on"][bucket_makers[0]]["condition"] == "service_completed_successfully"


def test_web_worker_and_beat_run_the_makefile_targets():
    s, targets = services(), makefile_targets()
    images = set()
    for name, target in PROCESSES.items():
        assert command(s[name]) == ["make", target], f"{name} runs {command(s[name])}, not `make {target}`"
        assert target in targets, f"the Makefile has no {target} target"
        images.add((s[name]["image"], json.dumps(s[name].get("build"), sort_keys=True)))
    images.add((s["migrate"]["image"], json.dumps(s["migrate"].get("build"), sort_keys=True)))
    assert len(images) == 1, f"web, worker, beat and migrate must run the one image built from the Dockerfile: {images}"
    assert s["web"]["build"]["context"] == "." and s["web"]["build"].get("dockerfile", "Dockerfile") == "Dockerfile"
    # Exactly one beat: a second would send every scheduled task (the ledger sealer among them) twice.
    assert s["beat"].get("deploy", {}).get("replicas", 1) == 1 and s["beat"].get("scale", 1) == 1


def test_migrate_runs_first_against_healthy_database_and_redis():
    s = services()
    migrate = " ".join(command(s["migrate"]))
    assert "manage.py migrate --noinput" in migrate and "manage.py sync_prices" in migrate, migrate
    assert migrate.index("migrate --noinput") < migrate.index("sync_prices") and "&&" in migrate
    assert s["migrate"].get("restart") == "no"
    assert ".env.example" in env_files(s["migrate"])
    for dependency in ("db", "redis"):
        assert s["migrate"]["depends_on"][dependency]["condition"] == "service_healthy"
    for name in PROCESSES:
        assert s[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully", name
    for name in ("db", "redis", "s3"):
        check = s[name].get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), f"{name} needs a healthcheck others can wait for"
    assert "pg_isready" in " ".join(s["db"]["healthcheck"]["test"])
    assert "ping" in s["redis"]["healthcheck"]["test"]


def test_web_listens_on_the_port_compose_publishes():
    s, defaults = services(), makefile_defaults()
    active, _ = env_example()
    web_env = environment(s["web"])
    port = int(web_env.get("PORT") or active.get("PORT") or defaults["PORT"])
    assert defaults["PORT"] == "8000" and port == 8000
    assert published(s["web"]) == {port: port}, f"web publishes {s['web'].get('ports')}, make serve binds {port}"
    assert web_env.get("HOST") == "0.0.0.0", "make serve binds 127.0.0.1 unless HOST says otherwise"
    assert "$(HOST)" in makefile_recipe("serve") and "$(PORT)" in makefile_recipe("serve")
    for name in ("worker", "beat", "migrate", "db", "redis", "s3"):
        assert not s[name].get("ports"), f"{name} needs no published port"


def test_processes_take_their_environment_from_env_example():
    s = services()
    for name in (*PROCESSES, "migrate"):
        assert env_files(s[name]) == [".env.example"], f"{name}: {env_files(s[name])}"
        extra = set(environment(s[name])) - {"HOST", "PORT"}
        assert not extra, f"{name} sets {extra} outside .env.example"


def test_env_example_points_at_the_compose_services():
    s = services()
    active, _ = env_example()
    db, db_env = urlsplit(active["DATABASE_URL"]), environment(s["db"])
    assert (db.scheme, db.hostname, db.port) == ("postgres", "db", 5432)
    assert (db.username, db.password, db.path.lstrip("/")) == (
        db_env["POSTGRES_USER"], db_env["POSTGRES_PASSWORD"], db_env["POSTGRES_DB"])
    redis = urlsplit(active["REDIS_URL"])
    assert (redis.scheme, redis.hostname, redis.port) == ("redis", "redis", 6379)
    s3, s3_env = urlsplit(active["AWS_S3_ENDPOINT_URL"]), environment(s["s3"])
    assert (s3.hostname, s3.port) == ("s3", 9000)
    assert (active["AWS_ACCESS_KEY_ID"], active["AWS_SECRET_ACCESS_KEY"]) == (
        s3_env["MINIO_ROOT_USER"], s3_env["MINIO_ROOT_PASSWORD"])
    # AWS credentials plus a region switch Bedrock on by default; these are MinIO's, so it must stay off.
    assert active["BEDROCK_ENABLED"].lower() in {"off", "false", "0", "no"}


# --- .env.example and config/settings.py --------------------------------------------------------------------------

def test_every_variable_in_env_example_is_read():
    active, commented = env_example()
    read = set(settings_reads())
    serve = serve_variables()
    assert serve == {"HOST", "PORT", "WEB_CONCURRENCY"}, serve
    unread_active = set(active) - read - serve
    assert not unread_active, f".env.example sets variables nothing reads: {sorted(unread_active)}"
    unread_commented = set(commented) - read - serve - ANNOUNCED
    assert not unread_commented, f".env.example lists variables nothing reads: {sorted(unread_commented)}"
    # Announced variables stay commented until settings read them.
    assert not (ANNOUNCED - read) & set(active), "set METRICS_TOKEN / LOG_FORMAT only once settings read them"
    assert ANNOUNCED <= set(commented) | set(active), "list issue 12's METRICS_TOKEN and LOG_FORMAT"
    assert serve <= set(active) | set(commented)


def test_env_example_lists_every_variable_settings_read():
    active, commented = env_example()
    reads = settings_reads()
    assert len(reads) > 40, "the AST reader found too few env reads: has config/settings.py changed its style?"
    missing = set(reads) - set(active) - set(commented)
    assert not missing, f"config/settings.py reads variables .env.example does not list: {sorted(missing)}"
    required = {name for name, has_default in reads.items() if not has_default}
    assert required <= set(active), f"read without a default, so .env.example must set {sorted(required - set(active))}"
    for name, why in PRODUCTION_MUST_SET.items():
        assert active.get(name), f"production must set {name} ({why})"


def _settings_from(env: dict) -> dict:
    probe = """
import json, os, django
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")  # as manage.py, config/asgi.py and Celery do
from django.conf import settings
django.setup()
s = settings.STORAGES["default"]
print(json.dumps({
  "debug": settings.DEBUG, "db": settings.DATABASES["default"]["ENGINE"],
  "db_host": settings.DATABASES["default"]["HOST"], "cache": settings.CACHES["default"]["BACKEND"],
  "eager": settings.CELERY_TASK_ALWAYS_EAGER, "storage": s["BACKEND"],
  "endpoint": s.get("OPTIONS", {}).get("endpoint_url"),
  "bedrock": settings.BEDROCK_ENABLED, "email": settings.EMAIL_BACKEND, "secure": settings.SESSION_COOKIE_SECURE,
  "proxy_ssl": list(settings.SECURE_PROXY_SSL_HEADER), "inline_seal": settings.LEDGER_SEAL_INLINE,
}))
"""
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_env_example_configures_production():
    """Handed over as compose hands it (its active lines, nothing else), .env.example gives production settings and
    passes Django's deployment checks."""
    active, _ = env_example()
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), **active}
    s = _settings_from(env)
    assert s["debug"] is False and s["secure"] is True and s["proxy_ssl"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert s["db"] == "django.db.backends.postgresql" and s["db_host"] == "db"
    assert s["cache"] == "django_redis.cache.RedisCache" and s["eager"] is False and s["inline_seal"] is False
    assert s["storage"] == "storages.backends.s3.S3Storage" and s["endpoint"] == "http://s3:9000"
    assert s["bedrock"] is False
    assert s["email"] == "django.core.mail.backends.console.EmailBackend"  # compose only: no SMTP relay in the stack
    # As the Dockerfile and `make serve` do: collect the static files first (without them `check --deploy` fails
    # with imagegate.E001; tests/test_tls.py shows that).
    collect = subprocess.run([sys.executable, "manage.py", "collectstatic", "--noinput", "--verbosity", "0"], cwd=ROOT,
                             env=env, capture_output=True, text=True)
    assert collect.returncode == 0, collect.stdout + collect.stderr
    check = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], cwd=ROOT,
                           env=env, capture_output=True, text=True)
    assert check.returncode == 0 and "no issues" in check.stdout, check.stdout + check.stderr


# --- Dockerfile ------------------------------------------------------------------------------------------------------

def test_dockerfile_builds_in_stages_and_runs_make_serve_as_non_root():
    all_stages = stages()
    assert len(all_stages) >= 2, "the Dockerfile must be multi-stage"
    args = {m[1]: m[2] for m in re.finditer(r"^ARG (\w+)=(\S+)$", DOCKERFILE.read_text(), re.M)}
    bases = [re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], st[0][1].split()[0]) for st in all_stages]
    assert all(re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?", base) for base in bases), bases
    build, runtime = all_stages[0], all_stages[-1]
    build_name = build[0][1].split()[-1]
    assert " AS " in build[0][1].upper()

    build_runs = " ".join(a for k, a in build if k == "RUN")
    assert re.search(r"-m venv /app/\.venv\b", build_runs), "the virtualenv lives where the Makefile looks: /app/.venv"
    assert re.search(r"/app/\.venv/bin/pip install (--\S+ )*\.(\s|$)", build_runs), "pip install . (no dev extras)"
    assert ".[dev]" not in DOCKERFILE.read_text()

    copies = [(i, a) for i, (k, a) in enumerate(runtime) if k == "COPY"]
    venv_copy = [i for i, a in copies if f"--from={build_name}" in a and a.split()[-2:] == ["/app/.venv", "/app/.venv"]]
    assert venv_copy, "the runtime stage copies the build stage's /app/.venv"
    source_copy = [i for i, a in copies if a.split()[-2:] in (["."] * 2, [".", "/app"], [".", "./"])]
    assert source_copy, "the runtime stage copies the source"
    runs = [(i, a) for i, (k, a) in enumerate(runtime) if k == "RUN"]
    # make serve depends on `install`, which reinstalls unless .venv/.installed is newer than pyproject.toml: the
    # stamp must be touched after the last COPY (which brings pyproject.toml with its own mtime).
    touch = [i for i, a in runs if re.search(r"touch (\S+ )*/app/\.venv/\.installed", a)]
    assert touch and touch[-1] > max(i for i, _ in copies), "touch /app/.venv/.installed after the last COPY"
    assert "$(STAMP): pyproject.toml" in MAKEFILE.read_text() and "STAMP := $(VENV)/.installed" in MAKEFILE.read_text()
    assert any(re.search(r"apt-get install\b.*\bmake\b", a) for _, a in runs), "the image needs make"

    collect = [a for _, a in runs if "collectstatic" in a]
    assert collect and "DJANGO_DEBUG=off" in collect[0] and "DJANGO_SECRET_KEY=" in collect[0]
    envs = " ".join(a for k, a in dockerfile_instructions() if k in ("ENV", "ARG"))
    assert "DJANGO_SECRET_KEY" not in envs, "the build-time key belongs to the collectstatic command only"

    users = [a for k, a in runtime if k == "USER"]
    assert users, "the runtime stage must switch to a non-root user"
    final_user = users[-1].split(":")[0]
    assert final_user not in {"root", "0"}, users[-1]
    assert [k for k, _ in runtime].index("USER") > max(touch), "root's work comes before USER"

    assert re.search(r"\bHOST=0\.0\.0\.0\b", envs), "make serve must bind all interfaces in a container"
    assert any(k == "EXPOSE" and "8000" in a.split() for k, a in runtime)
    cmd = [a for k, a in runtime if k == "CMD"]
    assert cmd and json.loads(cmd[-1]) == ["make", "serve"]


def test_dockerignore_keeps_the_hosts_virtualenv_and_secrets_out():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    for entry in (".venv", ".env", ".git", "staticfiles", "media", "db.sqlite3"):
        assert entry in ignored, f".dockerignore must exclude {entry}"


# --- the docker CLI -------------------------------------------------------------------------------------------------

def _compose_structure_problems() -> list[str]:
    """What `docker compose config` would also refuse, checked without it."""
    data, problems = compose(), []
    top = {"services", "volumes", "networks", "configs", "secrets", "name", "include"}
    problems += [f"unknown top-level key {k}" for k in data if k not in top and not k.startswith("x-")]
    svc = data["services"]
    volumes = set(data.get("volumes") or {})
    for name, service in svc.items():
        if not (service.get("image") or service.get("build")):
            problems.append(f"{name} has neither image nor build")
        for dependency in service.get("depends_on") or {}:
            if dependency not in svc:
                problems.append(f"{name} depends on unknown service {dependency}")
        for path in env_files(service):
            if not (ROOT / path).exists():
                problems.append(f"{name}: env_file {path} does not exist")
        for mount in service.get("volumes") or []:
            source = mount.split(":")[0] if isinstance(mount, str) else mount.get("source")
            if source and not source.startswith((".", "/", "~")) and source not in volumes:
                problems.append(f"{name} mounts undeclared volume {source}")
        if "healthcheck" in service and not service["healthcheck"].get("disable"):
            test = service["healthcheck"].get("test")
            if not isinstance(test, str) and not (isinstance(test, list) and test
                                                  and test[0] in {"CMD", "CMD-SHELL", "NONE"}):
                problems.append(f"{name}: healthcheck test {test!r}")
    return problems


def test_docker_compose_config():
    """`docker compose config --quiet` validates compose.yaml where the docker CLI has the compose plugin.

    Not on this project's machines: they have a docker CLI but no Docker engine and no compose plugin
    (`docker compose version` fails), so there the CLI step cannot run. The test does not skip: it checks the file's
    structure itself (what `config` would also refuse: unknown keys, dependencies on unknown services, missing
    env_files, undeclared volumes), and the assertion message and a warning say that the CLI step did not run.
    """
    problems = _compose_structure_problems()
    docker = shutil.which("docker")
    version = (subprocess.run([docker, "compose", "version"], capture_output=True, text=True, timeout=60)
               if docker else None)
    if version is not None and version.returncode == 0:
        result = subprocess.run([docker, "compose", "-f", str(COMPOSE), "config", "--quiet"], cwd=ROOT,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        assert not problems, problems
        return
    why = ("no docker CLI on PATH" if docker is None else
           f"`docker compose version` failed here ({(version.stderr or version.stdout).strip().splitlines()[0]})")
    note = f"docker compose config was NOT run: {why}; compose.yaml was checked by the file checks only"
    warnings.warn(note, stacklevel=1)
    assert not problems, f"{problems} ({note})"
