"""Registering the engine's search attributes (``workflows/search_attributes.py``) on a server.

The embedded dev server gets them with its start flags; a real server (self-hosted) through
the operator API here, by ``ocw setup`` and by the trading worker at start. Temporal Cloud
registers them in its UI or with ``tcld`` (the operator API is not open to an API key there):
``ocw setup`` says so. Until they are registered the workflows simply do not set them.
"""

from __future__ import annotations

import logging

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client
from temporalio.service import RPCError

from trading.config import Settings
from workflows.search_attributes import ALL, NAMES

log = logging.getLogger(__name__)


async def missing_search_attributes(client: Client, namespace: str) -> list[str]:
    """The engine's attributes the server does not know (all of them if it cannot say)."""
    try:
        resp = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=namespace)
        )
    except RPCError as err:
        log.info("cannot list search attributes on %s: %s", namespace, err)
        return list(NAMES)
    known = set(resp.custom_attributes) | set(resp.system_attributes)
    return [name for name in NAMES if name not in known]


async def register_search_attributes(client: Client, namespace: str) -> tuple[bool, str]:
    """Add what is missing; (all registered now, what was done or why not)."""
    missing = await missing_search_attributes(client, namespace)
    if not missing:
        return True, f"search attributes {', '.join(NAMES)} are registered"
    try:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=namespace,
                search_attributes={
                    k.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
                    for k in ALL
                    if k.name in missing
                },
            )
        )
    except RPCError as err:
        return False, (
            f"search attributes {', '.join(missing)} are not registered on namespace "
            f"{namespace!r} and could not be added ({err.message}); on Temporal Cloud add them "
            "as Keyword attributes in the namespace's settings (or `tcld namespace "
            "search-attributes add`), then restart the worker"
        )
    still = await missing_search_attributes(client, namespace)
    if still:
        return False, f"search attributes {', '.join(still)} not visible yet; retry `ocw setup`"
    return True, f"registered search attributes {', '.join(missing)}"


async def with_search_attributes(client: Client, settings: Settings) -> Settings:
    """``settings`` as the account may use them: ``search_attributes`` stays on only when the
    server has (or now got) every attribute, else it is turned off with the reason logged."""
    if not settings.search_attributes:
        return settings
    ok, text = await register_search_attributes(client, settings.temporal_namespace)
    if ok:
        return settings
    log.warning("%s: workflows run without them", text)
    return settings.model_copy(update={"search_attributes": False})
