"""CRM connectors: extract leads and activities incrementally, push scores back.

Import these modules as ``plugins.crm.<name>`` (one import name per module, so their state is
never duplicated). The interfaces are in :mod:`plugins.crm.base`; implementations for
Salesforce (simple-salesforce), HubSpot (hubspot-api-client) and flat files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def open_connectors(
    data_dir: Path,
    *,
    salesforce_conn_id: str | None = None,
    hubspot_conn_id: str | None = None,
    web_tracking_dir: Path | None = None,
    **options: Any,
) -> dict[str, Any]:
    """The connectors of one deployment, sharing one state file under ``data_dir``.

    Credentials come from the named Airflow Connections, else from the ``PROX_*`` environment
    (see :mod:`plugins.crm.credentials`); a CRM without credentials is left out.
    ``options`` go to both CRM connectors (e.g. ``policy``).
    """
    from plugins.crm.base import ConnectorError
    from plugins.crm.credentials import resolve_hubspot, resolve_salesforce
    from plugins.crm.flatfile import web_tracking_source
    from plugins.crm.hubspot import HubSpotConnector
    from plugins.crm.salesforce import SalesforceConnector
    from plugins.crm.state import ConnectorState

    state = ConnectorState.for_data_dir(data_dir)
    found: dict[str, Any] = {}
    for name, resolve, cls, conn_id in (
        ("salesforce", resolve_salesforce, SalesforceConnector, salesforce_conn_id),
        ("hubspot", resolve_hubspot, HubSpotConnector, hubspot_conn_id),
    ):
        try:
            found[name] = cls(resolve(conn_id), state, **options)
        except ConnectorError:
            if conn_id:  # a named connection must exist; the environment is optional
                raise
    if web_tracking_dir is not None:
        found["file"] = web_tracking_source(web_tracking_dir, state)
    return found
