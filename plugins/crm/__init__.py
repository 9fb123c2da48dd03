"""CRM connectors: extract leads and activities incrementally, push scores back.

Import these modules as ``plugins.crm.<name>`` (one import name per module, so their state is
never duplicated). The interfaces are in :mod:`plugins.crm.base`; implementations for
Salesforce (simple-salesforce), HubSpot (hubspot-api-client) and flat files.

:data:`REGISTRY` is the one list of CRMs ProX talks to: the DAGs fan out over it, the jobs and
the hot path open connectors from it. Adding a CRM means adding one entry here (and its
connector and credentials modules).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

#: CRM name -> (connector class, credentials resolver), as "module:attribute" (imported lazily,
#: so DAG files can read the names at parse time without importing the client libraries).
REGISTRY: Final[Mapping[str, tuple[str, str]]] = {
    "salesforce": (
        "plugins.crm.salesforce:SalesforceConnector",
        "plugins.crm.credentials:resolve_salesforce",
    ),
    "hubspot": ("plugins.crm.hubspot:HubSpotConnector", "plugins.crm.credentials:resolve_hubspot"),
}
#: The CRM names, in fan-out order.
CRMS: Final[tuple[str, ...]] = tuple(REGISTRY)


def _load(ref: str) -> Any:
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


def open_connectors(
    data_dir: Path,
    *,
    conn_ids: Mapping[str, str] | None = None,
    web_tracking_dir: Path | None = None,
    **options: Any,
) -> dict[str, Any]:
    """The connectors of one deployment, sharing one state file under ``data_dir``.

    Credentials come from the Airflow Connection named in ``conn_ids[crm]``, else from the
    ``PROX_*`` environment (see :mod:`plugins.crm.credentials`); a CRM without credentials is
    left out. ``options`` go to every CRM connector (e.g. ``policy``).
    """
    from plugins.crm.base import ConnectorError
    from plugins.crm.flatfile import web_tracking_source
    from plugins.crm.state import ConnectorState

    state = ConnectorState.for_data_dir(data_dir)
    found: dict[str, Any] = {}
    for name, (connector, resolver) in REGISTRY.items():
        conn_id = (conn_ids or {}).get(name)
        try:
            found[name] = _load(connector)(_load(resolver)(conn_id), state, **options)
        except ConnectorError:
            if conn_id:  # a named connection must exist; the environment is optional
                raise
    if web_tracking_dir is not None:
        found["file"] = web_tracking_source(web_tracking_dir, state)
    return found
