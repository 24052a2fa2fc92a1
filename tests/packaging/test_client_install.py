"""meter-client alone: a fresh venv holding only its wheel runs a worker's job against a server.

The client wheel is built from the repository (clients/python), installed with its dependencies
from PyPI (pip's cache in ~/.cache/pip makes reruns fast) into a new venv, measured, and made to
run a Reserve + Commit through meter.client.MeterClient against the session's real server. Where
PyPI cannot be reached, these tests skip saying so.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sys
import tomllib
import urllib.request
import zipfile
from pathlib import Path

import pytest

from meterpb.v1 import meter_pb2 as pb
from tests.support import balance, grant

REPO = Path(__file__).resolve().parents[2]
CLIENT = REPO / "clients" / "python"
# What a client-only install may add to a bare venv, in bytes of `du -sb` (apparent size, the
# byte-compiled files pip writes included).
LIMIT = 40_000_000
JOB = """
import json, sys
import meter.client
from meter.client import MeterClient, usage

workspace, target = sys.argv[1:]
with MeterClient(target) as client:
    with client.job(
        workspace, "content.generate_post", job_id="client-only", usage=usage(items=3)
    ) as j:
        held = j.hold.amount
        j.actual = 5
print(json.dumps({"module": meter.client.__file__, "held": held, "charged": j.result.charged}))
"""


async def run(*argv: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None):
    """Run a command to its end, asynchronously (the server answers on this event loop)."""
    proc = await asyncio.create_subprocess_exec(
        *map(str, argv),
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 300)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def index_unreachable(python: str | Path) -> str | None:
    """Why pip's index cannot be reached, or None when it answers."""
    url = os.environ.get("PIP_INDEX_URL")
    if not url:
        code, out, _ = await run(python, "-m", "pip", "config", "get", "global.index-url")
        url = out.strip() if code == 0 and out.strip() else "https://pypi.org/simple"
    probe = f"{url.split()[0].rstrip('/')}/grpcio/"

    def fetch() -> None:
        with urllib.request.urlopen(probe, timeout=15) as answer:
            answer.read(1)

    try:
        await asyncio.to_thread(fetch)
    except OSError as e:  # URLError, timeouts, refused connections
        return f"{probe}: {e}"
    return None


async def pip(python: str | Path, *args: str | Path) -> str:
    """`python -m pip ARGS`; skips the test when pip's index (PyPI) cannot be reached."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code, out, err = await run(python, "-m", "pip", "--disable-pip-version-check", *args, env=env)
    if code and (why := await index_unreachable(python)):
        pytest.skip(f"PyPI is unreachable ({why}), so pip could not install the client")
    assert 0 == code, err
    return out


async def du(path: Path) -> int:
    code, out, err = await run("du", "-sb", path)
    assert 0 == code, err
    return int(out.split()[0])


def requirements(pyproject: Path) -> dict[str, str]:
    """The dependencies of a pyproject.toml, by normalised name."""
    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    return {re.split(r"[\[<>=!~ ;]", d, maxsplit=1)[0].lower().replace("_", "-"): d for d in deps}


@pytest.fixture(scope="module")
async def client_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("client-wheel")
    await pip(sys.executable, "wheel", "--quiet", "--no-deps", "--wheel-dir", out, CLIENT)
    [wheel] = out.glob("meter_client-*.whl")
    return wheel


async def test_a_client_only_install_stays_within_40_mb_and_runs_a_job(
    client_wheel, app, stub, ws, tmp_path
):
    venv = tmp_path / "venv"
    code, _, err = await run(sys.executable, "-m", "venv", venv)
    assert 0 == code, err
    bare = await du(venv)

    await pip(venv / "bin" / "python", "install", "--quiet", client_wheel)

    added = await du(venv) - bare
    print(f"meter-client adds {added:,} bytes to a bare venv of {bare:,}")
    assert added <= LIMIT
    installed = {
        p["name"].lower().replace("_", "-")
        for p in json.loads(await pip(venv / "bin" / "python", "list", "--format", "json"))
    }
    server_only = set(requirements(REPO / "pyproject.toml")) - set(
        requirements(CLIENT / "pyproject.toml")
    )
    assert {"meter-client", "grpcio", "protobuf", "googleapis-common-protos"} <= installed
    assert set() == installed & server_only  # no PostgreSQL, SQLAlchemy, Alembic, psycopg, ...

    await grant(stub, ws, 40)
    script = tmp_path / "job.py"
    script.write_text(JOB)
    # -I: neither the environment (PYTHONPATH) nor the working directory adds the repository.
    code, out, err = await run(
        venv / "bin" / "python", "-I", script, ws, f"127.0.0.1:{app.port}",
        cwd=tmp_path, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip

    assert 0 == code, err
    done = json.loads(out)
    assert Path(done["module"]).is_relative_to(venv)  # the installed client, not the checkout's
    assert (9, 5) == (done["held"], done["charged"])
    after = await balance(stub, ws)
    assert (35, 0, 5) == (after.available, after.held, after.lifetime_used)
    entries = await stub.ListTransactions(pb.ListTransactionsRequest(workspace_id=ws))
    assert ["job:client-only"] == [e.request_id for e in entries.entries if e.amount < 0]


async def test_the_server_wheel_holds_every_client_file_unchanged(client_wheel, tmp_path):
    """So a venv holding both distributions has one version of each file, whichever came last."""
    source = tmp_path / "server"  # a copy, as the Dockerfile builds it: no build/ in the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for name in ("src", "generated"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "wheels"
    await pip(sys.executable, "wheel", "--quiet", "--no-deps", "--wheel-dir", out, source)
    [server_wheel] = out.glob("meter-*.whl")

    def record(wheel: Path) -> dict[str, str]:
        with zipfile.ZipFile(wheel) as z:
            [name] = [n for n in z.namelist() if n.endswith(".dist-info/RECORD")]
            rows = z.read(name).decode().splitlines()
        return {
            path: digest
            for path, digest, _ in (row.rsplit(",", 2) for row in rows)
            if ".dist-info/" not in path
        }

    client, server = record(client_wheel), record(server_wheel)
    assert {
        "meter/client/__init__.py",
        "meter/client/_sync/holds.py",  # from generated/, like meterpb
        "meter/webhooks.py",
        "meterpb/v1/meter_pb2.py",
    } <= set(client)
    assert client == {path: server.get(path) for path in client}


def test_the_client_asks_for_what_the_server_asks_for_and_no_more():
    """The client's dependencies are the server's own lines: the two never disagree."""
    client = requirements(CLIENT / "pyproject.toml")
    server = requirements(REPO / "pyproject.toml")
    assert {"grpcio", "protobuf", "googleapis-common-protos"} == set(client)
    assert client == {name: server[name] for name in client}


def test_the_server_distribution_lists_every_package_in_the_tree():
    """pyproject.toml names its packages (the generated blocking client lives under generated/,
    in a package whose source is src/): none under src/ or generated/ is left out, and each
    listed one is found where package-dir says."""
    from setuptools import find_namespace_packages

    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    tree = {*find_namespace_packages(REPO / "src"), *find_namespace_packages(REPO / "generated")}
    assert sorted(tree) == config["packages"]

    def source(package: str) -> Path:
        parts = package.split(".")
        for n in range(len(parts), -1, -1):  # the longest prefix package-dir maps
            if (root := config["package-dir"].get(".".join(parts[:n]))) is not None:
                return REPO / root / Path(*parts[n:])
        raise AssertionError(package)

    assert [] == [p for p in config["packages"] if not any(source(p).iterdir())]
