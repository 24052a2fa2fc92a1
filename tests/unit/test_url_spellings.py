"""Database URLs: every spelling libpq or SQLAlchemy reads, and one line for the rest."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg

from meter.storage.db import _session, libpq_url, normalize_url
from meter.storage.dburl import DatabaseUrl, DatabaseUrlError

MULTI = {"host": "127.0.0.1,127.0.0.1", "port": "6001,6002", "dbname": "meter"}
RW = {"target_session_attrs": "read-write"}

SPELLINGS = [
    # What `pg_autoctl show uri` prints.
    (
        "postgres://127.0.0.1:6001,127.0.0.1:6002/meter?target_session_attrs=read-write"
        "&sslmode=prefer",
        {**MULTI, **RW, "sslmode": "prefer"},
    ),
    ("postgresql://127.0.0.1:6001,127.0.0.1:6002/meter", MULTI),
    # Hosts without ports: libpq's default port for each.
    (
        "postgresql://db1,db2/meter?target_session_attrs=read-write",
        dict(host="db1,db2", dbname="meter", **RW),
    ),
    ("postgresql://db1:6001,db2/meter", dict(host="db1,db2", port="6001,", dbname="meter")),
    # One port for every host.
    (
        "postgresql://db1,db2/meter?port=6001",
        dict(host="db1,db2", port="6001,6001", dbname="meter"),
    ),
    (
        "postgresql://[::1]:6001,[fe80::1]/meter",
        dict(host="::1,fe80::1", port="6001,", dbname="meter"),
    ),
    # User and password from the URL, percent-encoded.
    (
        "postgresql://ana:p%40ss%2Fw@db1:6001,db2:6002/meter",
        dict(host="db1,db2", port="6001,6002", dbname="meter", user="ana", password="p@ss/w"),
    ),
    # Socket directories, in the authority or the query.
    (
        "postgresql://%2Fvar%2Frun%2Fpostgresql/meter",
        dict(host="/var/run/postgresql", dbname="meter"),
    ),
    ("postgresql:///meter?host=/tmp&port=6001", dict(host="/tmp", port="6001", dbname="meter")),
    # Nothing but the database: libpq's defaults (PGHOST, PGUSER, .pgpass ...) decide the rest.
    ("postgresql:///meter", dict(dbname="meter")),
    ("postgresql://", {}),
    # libpq's key=value strings.
    (
        "host=127.0.0.1,127.0.0.1 port=6001,6002 dbname=meter target_session_attrs=read-write",
        {**MULTI, **RW},
    ),
    (
        "dbname=meter sslmode=verify-full sslrootcert=/etc/ca.pem",
        dict(dbname="meter", sslmode="verify-full", sslrootcert="/etc/ca.pem"),
    ),
    # SQLAlchemy's spellings: any driver, repeated host=h:p, host=h1,h2&port=p1,p2.
    (
        "postgresql+psycopg://@/meter?host=127.0.0.1:6001&host=127.0.0.1:6002"
        "&target_session_attrs=read-write",
        {**MULTI, **RW},
    ),
    (
        "postgresql+psycopg2://ana@/meter?host=127.0.0.1:6001&host=127.0.0.1:6002",
        {**MULTI, "user": "ana"},
    ),
    ("postgresql+asyncpg:///meter?host=127.0.0.1,127.0.0.1&port=6001,6002", MULTI),
    ("postgresql:///meter?host=db1&host=db2", dict(host="db1,db2", dbname="meter")),
    ("postgresql+psycopg:///meter?host=db1:6001", dict(host="db1", port="6001", dbname="meter")),
    # And libpq's authority under SQLAlchemy's scheme, which SQLAlchemy itself cannot read.
    ("postgresql+psycopg://127.0.0.1:6001,127.0.0.1:6002/meter", MULTI),
    (
        "postgresql+psycopg://ana:pw@db1:6001/meter?sslmode=require&connect_timeout=3",
        dict(
            host="db1",
            port="6001",
            dbname="meter",
            user="ana",
            password="pw",
            sslmode="require",
            connect_timeout="3",
        ),
    ),
]


@pytest.mark.parametrize(("url", "params"), SPELLINGS)
def test_every_spelling_reads_as_libpq_keywords(url, params):
    assert params == dict(DatabaseUrl.parse(url).params)


@pytest.mark.parametrize(("url", "params"), SPELLINGS)
def test_both_renderings_read_back_to_the_same_connection(url, params):
    parsed = DatabaseUrl.parse(url)

    assert parsed == DatabaseUrl.parse(parsed.libpq())
    assert parsed == DatabaseUrl.parse(parsed.sqlalchemy())
    assert parsed == DatabaseUrl.parse(normalize_url(url)) == DatabaseUrl.parse(libpq_url(url))


@pytest.mark.parametrize(("url", "params"), SPELLINGS)
def test_sqlalchemy_reads_the_canonical_string_as_libpq_does(url, params):
    """Tools that hand the canonical string to SQLAlchemy themselves reach the same hosts."""
    _, cparams = PGDialect_psycopg().create_connect_args(sa.engine.make_url(normalize_url(url)))
    read = {k: str(v) for k, v in cparams.items()}
    if not read.get("port", "x").strip(","):
        del read["port"]  # "," and no port both mean the default port for each host

    assert params == read


def test_pg_autoctl_uri_renders_for_libpq_as_it_was_printed():
    url = "postgres://127.0.0.1:6001,127.0.0.1:6002/meter?sslmode=prefer&target_session_attrs=read-write"

    assert url.replace("postgres:", "postgresql:") == libpq_url(url)
    assert (
        "postgresql+psycopg:///meter?host=127.0.0.1,127.0.0.1&port=6001,6002&sslmode=prefer"
        "&target_session_attrs=read-write"
    ) == normalize_url(url)


def test_a_single_tcp_host_keeps_the_usual_shape():
    """So that tools that edit URLs (a database per test run) keep working on them."""
    assert "postgresql+psycopg://postgres@127.0.0.1:5432/test" == normalize_url(
        "postgresql://postgres@127.0.0.1:5432/test"
    )
    assert "test" == sa.engine.make_url(normalize_url("postgresql://u@h:1/test")).database


def test_meters_connections_keep_the_urls_settings_and_add_their_bounded_waits():
    params = _session(
        "postgresql://h1,h2/meter?options=-c%20search_path%3Dbilling&connect_timeout=2"
        "&target_session_attrs=read-write"
    )

    assert ("h1,h2", "meter", "read-write", "2") == (
        params["host"], params["dbname"], params["target_session_attrs"],
        params["connect_timeout"],
    )  # fmt: skip
    assert params["options"].startswith("-c search_path=billing -c statement_timeout=")
    assert params["application_name"].startswith("meter-")
    assert 5 == _session("postgresql:///meter")["connect_timeout"]


REFUSED = [
    ("", "the database URL is empty"),
    ("mysql://db1/meter", 'not a PostgreSQL URL: scheme "mysql"'),
    ("http://db1/meter", 'not a PostgreSQL URL: scheme "http"'),
    ("db1:5432/meter", "not a PostgreSQL URL (expected postgresql://"),
    ("postgresql://db1:P1,db2:P2/meter", 'port "P1" is not a number from 1 to 65535'),
    ("postgresql://db1:70000/meter", 'port "70000" is not a number from 1 to 65535'),
    ("postgresql://db1,db2,db3/meter?port=1,2", "2 ports for 3 hosts"),
    ("postgresql://db1/meter?sslmod=require", 'invalid URI query parameter: "sslmod"'),
    ("host=db1 dbname", 'missing "=" after "dbname"'),
    ("postgresql+psycopg:///meter?host=db1:1&port=2", "give ports either as host=h1:p1"),
]


@pytest.mark.parametrize(("url", "message"), REFUSED)
def test_a_url_neither_library_reads_is_refused_with_one_line(url, message):
    with pytest.raises(DatabaseUrlError) as e:
        DatabaseUrl.parse(url)

    assert message in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://ana:s3cr%zzet@db1/meter",
        "host=db1 password=s3cr%zzet dbname=meter port=x",
        "postgresql://ana:s3cr%zzet@db1:x/meter",
    ],
)
def test_the_refusal_never_shows_the_password(url):
    with pytest.raises(DatabaseUrlError) as e:
        DatabaseUrl.parse(url)

    assert "s3cr" not in str(e.value)


def test_redacted_hides_the_password_only():
    url = DatabaseUrl.parse("postgresql://ana:s3cret@db1:6001,db2:6002/meter")

    assert "postgresql://ana:***@db1:6001,db2:6002/meter" == url.redacted()


def test_hosts_are_listed_in_the_order_libpq_tries_them():
    assert [("db1", "6001"), ("db2", "")] == DatabaseUrl.parse("postgresql://db1:6001,db2/m").hosts
    assert [("db1", "7"), ("db2", "7")] == DatabaseUrl.parse("host=db1,db2 port=7").hosts
