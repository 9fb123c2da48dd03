"""Where connector credentials come from: Airflow Connections, or the environment for the CLI.

Never from code. An Airflow Connection for Salesforce holds the login/instance URL in
``host`` (e.g. ``https://login.salesforce.com`` or the My Domain URL), the connected app's
client id in ``login`` and secret in ``password``; ``extra`` may add ``username``,
``password`` (username-password flow), ``api_version`` and ``ca_bundle``. For HubSpot,
``password`` holds the private-app token (or ``extra`` the OAuth ``client_id``,
``client_secret``, ``refresh_token``), ``host`` the API base URL and ``extra.ca_bundle`` a CA file.

Environment variables (``prox`` CLI): ``PROX_SALESFORCE_URL``, ``PROX_SALESFORCE_CLIENT_ID``,
``PROX_SALESFORCE_CLIENT_SECRET``, ``PROX_SALESFORCE_USERNAME``, ``PROX_SALESFORCE_PASSWORD``,
``PROX_SALESFORCE_CA_BUNDLE``, ``PROX_SALESFORCE_API_VERSION`` (59.0); ``PROX_HUBSPOT_URL``,
``PROX_HUBSPOT_ACCESS_TOKEN``, ``PROX_HUBSPOT_CLIENT_ID``, ``PROX_HUBSPOT_CLIENT_SECRET``,
``PROX_HUBSPOT_REFRESH_TOKEN``, ``PROX_HUBSPOT_CA_BUNDLE`` (the list is
:data:`prox.settings.CRM_CREDENTIAL_VARIABLES`, read through :func:`prox.settings.crm_environ`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from plugins.crm.base import ConnectorError
from prox.settings import airflow_connection_uri, crm_environ


@dataclass(frozen=True)
class SalesforceCredentials:
    url: str
    client_id: str
    client_secret: str
    username: str | None = None
    password: str | None = None
    ca_bundle: str | None = None
    api_version: str = "59.0"

    def __repr__(self) -> str:  # never print secrets
        return f"SalesforceCredentials(url={self.url!r}, client_id=***, flow={'password' if self.username else 'client_credentials'})"


@dataclass(frozen=True)
class HubSpotCredentials:
    url: str = "https://api.hubapi.com"
    access_token: str | None = None
    client_id: str | None = None
    client_secret: str | None = None
    refresh_token: str | None = None
    ca_bundle: str | None = None

    def __repr__(self) -> str:
        return (
            f"HubSpotCredentials(url={self.url!r}, auth={'oauth' if self.refresh_token else 'private-app'})"
        )


def salesforce_from_env(env: Mapping[str, str] | None = None) -> SalesforceCredentials:
    """From ``PROX_SALESFORCE_*`` in ``env`` (default: the process's environment)."""
    env = crm_environ("salesforce", env)
    missing = [
        k
        for k in ("PROX_SALESFORCE_URL", "PROX_SALESFORCE_CLIENT_ID", "PROX_SALESFORCE_CLIENT_SECRET")
        if not env.get(k)
    ]
    if missing:
        raise ConnectorError(
            f"Salesforce credentials: set {', '.join(missing)} (or use an Airflow Connection)"
        )
    return SalesforceCredentials(
        url=env["PROX_SALESFORCE_URL"].rstrip("/"),
        client_id=env["PROX_SALESFORCE_CLIENT_ID"],
        client_secret=env["PROX_SALESFORCE_CLIENT_SECRET"],
        username=env.get("PROX_SALESFORCE_USERNAME") or None,
        password=env.get("PROX_SALESFORCE_PASSWORD") or None,
        ca_bundle=env.get("PROX_SALESFORCE_CA_BUNDLE") or None,
        api_version=env.get("PROX_SALESFORCE_API_VERSION") or "59.0",
    )


def hubspot_from_env(env: Mapping[str, str] | None = None) -> HubSpotCredentials:
    """From ``PROX_HUBSPOT_*`` in ``env`` (default: the process's environment)."""
    env = crm_environ("hubspot", env)
    token, refresh = env.get("PROX_HUBSPOT_ACCESS_TOKEN"), env.get("PROX_HUBSPOT_REFRESH_TOKEN")
    if not token and not refresh:
        raise ConnectorError(
            "HubSpot credentials: set PROX_HUBSPOT_ACCESS_TOKEN (private app) or "
            "PROX_HUBSPOT_CLIENT_ID/_CLIENT_SECRET/_REFRESH_TOKEN (or use an Airflow Connection)"
        )
    return HubSpotCredentials(
        url=(env.get("PROX_HUBSPOT_URL") or "https://api.hubapi.com").rstrip("/"),
        access_token=token or None,
        client_id=env.get("PROX_HUBSPOT_CLIENT_ID") or None,
        client_secret=env.get("PROX_HUBSPOT_CLIENT_SECRET") or None,
        refresh_token=refresh or None,
        ca_bundle=env.get("PROX_HUBSPOT_CA_BUNDLE") or None,
    )


def _connection(conn_id: str) -> Any:
    """An Airflow Connection by id: through the task SDK inside a task, else AIRFLOW_CONN_<ID>."""
    from airflow.sdk import Connection

    try:
        return Connection.get(conn_id)
    except Exception:
        raw = airflow_connection_uri(conn_id)
        if not raw:
            raise ConnectorError(
                f"Airflow Connection {conn_id!r} not found (nor AIRFLOW_CONN_{conn_id.upper()})"
            ) from None
        if raw.lstrip().startswith("{"):
            return Connection.from_json(raw, conn_id=conn_id)
        return Connection.from_uri(raw, conn_id=conn_id)


def _extra(conn: Any) -> dict[str, Any]:
    extra = conn.extra_dejson if hasattr(conn, "extra_dejson") else json.loads(conn.extra or "{}")
    return dict(extra or {})


def _url(conn: Any, default: str) -> str:
    host = (conn.host or "").rstrip("/")
    if not host:
        return default
    if not host.startswith("http"):
        host = f"https://{host}{f':{conn.port}' if conn.port else ''}"
    return host


def salesforce_from_connection(conn_id: str) -> SalesforceCredentials:
    conn = _connection(conn_id)
    extra = _extra(conn)
    if not conn.login or not conn.password:
        raise ConnectorError(
            f"Airflow Connection {conn_id!r}: login (client id) and password (client secret) are required"
        )
    return SalesforceCredentials(
        url=_url(conn, "https://login.salesforce.com"),
        client_id=conn.login,
        client_secret=conn.password,
        username=extra.get("username"),
        password=extra.get("password"),
        ca_bundle=extra.get("ca_bundle"),
        api_version=str(extra.get("api_version", "59.0")),
    )


def hubspot_from_connection(conn_id: str) -> HubSpotCredentials:
    conn = _connection(conn_id)
    extra = _extra(conn)
    if not conn.password and not extra.get("refresh_token"):
        raise ConnectorError(
            f"Airflow Connection {conn_id!r}: password (private-app token) or extra.refresh_token required"
        )
    return HubSpotCredentials(
        url=_url(conn, "https://api.hubapi.com"),
        access_token=conn.password or None,
        client_id=extra.get("client_id"),
        client_secret=extra.get("client_secret"),
        refresh_token=extra.get("refresh_token"),
        ca_bundle=extra.get("ca_bundle"),
    )


def resolve_salesforce(conn_id: str | None = None) -> SalesforceCredentials:
    """From the Airflow Connection when given, else from the environment."""
    return salesforce_from_connection(conn_id) if conn_id else salesforce_from_env()


def resolve_hubspot(conn_id: str | None = None) -> HubSpotCredentials:
    return hubspot_from_connection(conn_id) if conn_id else hubspot_from_env()
