"""Connecting to PostgreSQL for one-shot work (`migrate`, `up`, the command line), with errors a user can act
on: a DSN that cannot work is a configuration error (exit 2), a database that does not answer a runtime one
(exit 1, it may come back). Neither shows the password, nor a traceback."""

from __future__ import annotations

import asyncpg

from common.settings import ConfigError, check_dsn, redact_dsn

CONNECT_TIMEOUT = 10.0


class DatabaseUnavailable(RuntimeError):
    """PostgreSQL did not answer, or not as a server that takes connections now."""


async def connect(dsn: str, *, timeout: float = CONNECT_TIMEOUT) -> asyncpg.Connection:
    check_dsn(dsn)
    where = redact_dsn(dsn)
    try:
        return await asyncpg.connect(dsn, timeout=timeout)
    except (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError) as exc:
        raise ConfigError(f"the database at {where} refused the credentials: {_said(exc, dsn)}") from None
    except asyncpg.InvalidCatalogNameError as exc:
        raise ConfigError(f"the database at {where} does not exist: {_said(exc, dsn)}") from None
    except ValueError as exc:  # asyncpg's own DSN checks (ClientConfigurationError is a ValueError)
        raise ConfigError(f"CLICKEDGE_DATABASE_URL is not valid: {_said(exc, dsn)}") from None
    except TimeoutError:
        raise DatabaseUnavailable(f"the database at {where} did not answer within {timeout:.0f}s") from None
    except OSError as exc:  # refused, unreachable, a name that does not resolve
        raise DatabaseUnavailable(f"cannot connect to the database at {where}: {exc.strerror or exc}") from None
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:  # too many connections, starting up, ...
        raise DatabaseUnavailable(f"the database at {where} refused the connection: {_said(exc, dsn)}") from None


def _said(exc: BaseException, dsn: str) -> str:
    """What the error says, with the DSN (and so its password) taken out should it quote it."""
    return str(exc).replace(dsn, redact_dsn(dsn)).splitlines()[0] if str(exc) else type(exc).__name__


def rows_affected(status: str) -> int:
    """The row count of a command status such as ``DELETE 12`` (what asyncpg's execute returns)."""
    return int(status.rsplit(" ", 1)[-1])
