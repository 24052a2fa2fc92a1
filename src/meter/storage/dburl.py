"""Database URLs: every spelling libpq or SQLAlchemy reads, parsed once, rendered for each.

Meter talks to PostgreSQL through two libraries that read URLs differently. libpq (psycopg's
ledger pool, the LISTEN and NOTIFY connections, pgbench) reads `postgresql://h1:p1,h2:p2/db`
and `host=h1,h2 port=p1,p2` strings, but not SQLAlchemy's `+driver` schemes nor its
`?host=h1:p1&host=h2:p2` spelling (it keeps the last `host`). SQLAlchemy's URL parser reads
those, but not libpq's comma-separated hosts in the authority. So a URL is read here, once,
into libpq's own keywords (libpq's parser does the reading: `conninfo_to_dict`), and each
library gets the form it needs: a libpq URI for psycopg, keyword arguments for SQLAlchemy's
engines (which then parse nothing), and one canonical `postgresql+psycopg://` string that
both this module and SQLAlchemy read back to the same connection.

What is not given is not invented: a URL without a user, password, host or port leaves it to
libpq's defaults (`PGUSER`, `PGPASSWORD`, `~/.pgpass`, `PGHOST`, `PGPORT`, a local socket).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict

# Schemes that name PostgreSQL: libpq's two, and SQLAlchemy's with any of its drivers
# (postgresql+psycopg2://, +asyncpg, +pg8000 ...): Meter always connects with psycopg 3.
_SCHEME = re.compile(r"^(postgresql|postgres)(\+[a-z0-9_]+)?$")
# SQLAlchemy's own test for `host=name:port` in a query (RFC 1123 host names); an IPv6
# address such as ::1 does not match it, so it stays a host.
_HOST_PORT = re.compile(r"^([a-zA-Z0-9\-.]*):(\d*)$")
_SHAPE = "postgresql://[user[:password]@][host[:port][,host[:port]...]]/dbname[?param=value&...]"
# Keywords rendered in the URL's own places rather than its query.
_PLACED = ("user", "password", "host", "port", "dbname")


class DatabaseUrlError(ValueError):
    """A database URL that neither libpq nor SQLAlchemy reads; the message is one line and
    never contains the password."""


@dataclass(frozen=True, slots=True)
class DatabaseUrl:
    """A PostgreSQL connection as libpq keywords (`host`, `port`, `dbname`, `sslmode` ...)."""

    params: Mapping[str, str]

    @classmethod
    def parse(cls, text: str) -> DatabaseUrl:
        """Read a libpq URI, a libpq `key=value` string or a SQLAlchemy URL.

        Raises:
            DatabaseUrlError: none of those, an unknown parameter, a port that is not a
                number, or a different number of ports than hosts.
        """
        url = text.strip()
        if not url:
            raise DatabaseUrlError(f"the database URL is empty (expected {_SHAPE})")
        if "://" not in url:
            if "=" not in url:
                raise DatabaseUrlError(f"not a PostgreSQL URL (expected {_SHAPE})")
            params = _libpq(url, url)
        else:
            scheme, rest = url.split("://", 1)
            if not _SCHEME.match(scheme.lower()):
                raise DatabaseUrlError(
                    f'not a PostgreSQL URL: scheme "{scheme}" (expected {_SHAPE})'
                )
            params = _libpq("postgresql://" + _libpq_query(rest), url)
        _check_ports(params)
        hosts = params.get("host", "").split(",")
        if len(hosts) > 1 and "," not in params.get("port", ","):
            params["port"] = ",".join([params["port"]] * len(hosts))  # one port for each host
        if "port" in params and not params["port"].strip(","):
            del params["port"]  # `h1,h2` without ports reads as port ",": the default for each
        return cls(MappingProxyType(dict(sorted(params.items()))))

    @property
    def hosts(self) -> list[tuple[str, str]]:
        """(host, port) pairs in libpq's order of trial; "" where a default applies."""
        hosts = self.params.get("host", "").split(",")
        ports = self.params.get("port", "").split(",")
        if len(ports) == 1:
            ports *= len(hosts)
        return list(zip(hosts, ports, strict=True))

    def with_database(self, dbname: str) -> DatabaseUrl:
        return DatabaseUrl(MappingProxyType({**self.params, "dbname": dbname}))

    def with_node(self, host: str, port: int) -> DatabaseUrl:
        """The same database and credentials on one other node (a Citus worker)."""
        params = {k: v for k, v in self.params.items() if k != "target_session_attrs"}
        return DatabaseUrl(MappingProxyType({**params, "host": host, "port": str(port)}))

    def libpq(self) -> str:
        """A libpq URI (psycopg, psql, pgbench), multi-host as libpq reads it."""
        return self._render("postgresql")

    def sqlalchemy(self) -> str:
        """The canonical string: a `postgresql+psycopg://` URL that SQLAlchemy reads to the same
        hosts and ports (its `?host=h1,h2&port=p1,p2` spelling), and `parse` reads back."""
        return self._render("postgresql+psycopg")

    def redacted(self) -> str:
        """For messages and logs: the libpq URI with the password replaced."""
        if "password" not in self.params:
            return self.libpq()
        hidden = DatabaseUrl(MappingProxyType({**self.params, "password": "***"})).libpq()
        return hidden.replace(":%2A%2A%2A@", ":***@", 1)

    def _render(self, scheme: str) -> str:
        p = self.params
        auth = ""
        if "user" in p or "password" in p:
            auth = _q(p.get("user", ""))
            if "password" in p:
                auth += ":" + _q(p["password"])
            auth += "@"
        query = {k: v for k, v in p.items() if k not in _PLACED}
        hosts = self.hosts if "host" in p else []
        netloc = ""
        if (
            hosts
            and all(h for h, _ in hosts)
            and (scheme == "postgresql" or (len(hosts) == 1 and not hosts[0][0].startswith("/")))
        ):
            netloc = ",".join(_netloc_host(h) + (f":{port}" if port else "") for h, port in hosts)
        else:
            # Several hosts, or a socket directory: SQLAlchemy reads them from the query only.
            query.update({k: p[k] for k in ("host", "port") if k in p})
        tail = "&".join(f"{k}={quote(v, safe='/,:')}" for k, v in sorted(query.items()))
        return f"{scheme}://{auth}{netloc}/{_q(p.get('dbname', ''))}" + (f"?{tail}" if tail else "")


def _netloc_host(host: str) -> str:
    return f"[{host}]" if ":" in host else _q(host)


def _q(part: str) -> str:
    return quote(part, safe="")


def _libpq_query(rest: str) -> str:
    """Rewrite SQLAlchemy's `?host=h1:p1&host=h2:p2` (and `?host=h:p`, and repeated `host`
    without ports) into libpq's `?host=h1,h2&port=p1,p2`; leave everything else to libpq,
    which would keep only the last `host` and take `h:p` for a host name.

    Raises:
        DatabaseUrlError: ports in both spellings at once (SQLAlchemy refuses it too).
    """
    head, sep, query = rest.partition("?")
    pairs = parse_qsl(query, keep_blank_values=True)
    hosts = [v for k, v in pairs if k == "host"]
    entries = [e for v in hosts for e in v.split(",")]
    split = [_HOST_PORT.match(e) for e in entries]
    if not sep or (len(hosts) < 2 and not any(split)):
        return rest  # libpq's own `?host=...`: a name, a list, an address or a socket dir
    if any(split) and any(k == "port" for k, _ in pairs):
        raise DatabaseUrlError(
            "give ports either as host=h1:p1&host=h2:p2 or as host=h1,h2&port=p1,p2, not both"
        )
    names = [m.group(1) if m else e for e, m in zip(entries, split, strict=True)]
    ports = [m.group(2) if m else "" for m in split]
    others = [(k, v) for k, v in pairs if k != "host"]
    others.append(("host", ",".join(names)))
    if any(ports):
        others.append(("port", ",".join(ports)))
    return f"{head}?" + "&".join(f"{_q(k)}={quote(v, safe='/,:')}" for k, v in others)


def _libpq(conninfo: str, original: str) -> dict[str, str]:
    try:
        return {k: str(v) for k, v in conninfo_to_dict(conninfo).items()}
    except psycopg.ProgrammingError as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else "unreadable"
        raise DatabaseUrlError(
            f"not a PostgreSQL URL libpq can read: {_scrub(reason, original)}"
        ) from None


def _scrub(message: str, original: str) -> str:
    """libpq quotes the token it could not read, which may be (part of) the password."""
    try:
        secret = urlsplit(original).password if "://" in original else None
    except ValueError:
        secret = None
    if not secret:
        match = re.search(r"password\s*=\s*'?([^'\s]+)", original)
        secret = match.group(1) if match else None
    if not secret:
        return message
    return message.replace(secret, "***").replace(unquote(secret), "***")


def _check_ports(params: dict[str, str]) -> None:
    """libpq would only say so at connect time, with a connection error per attempt."""
    ports = params.get("port", "").split(",") if "port" in params else []
    for port in ports:
        if port and not (port.isdigit() and 0 < int(port) < 65536):
            raise DatabaseUrlError(f'port "{port}" is not a number from 1 to 65535')
    hosts = params.get("host", "").split(",") if "host" in params else [""]
    if len(ports) > 1 and len(ports) != len(hosts):
        raise DatabaseUrlError(f"{len(ports)} ports for {len(hosts)} hosts")
