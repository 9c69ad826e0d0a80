"""The engine's custom search attributes: what `temporal workflow list --query` filters on.

``OcwAccount`` and ``OcwSymbol`` are set when a workflow starts; ``OcwPositionStatus``,
``OcwExitReason`` and ``OcwDecidedBy`` are upserted as they change. A server refuses a workflow
(or fails its task) that names an unregistered attribute, so the workflows only set them when
the worker found them registered (``EngineConfig.search_attributes``): the embedded dev server
registers them at start (``DEV_SERVER_FLAGS``), a real server with ``ocw setup``.

Workflow-safe: only ``temporalio.common``.
"""

from __future__ import annotations

from temporalio.common import SearchAttributeIndexedValueType, SearchAttributeKey

OCW_ACCOUNT = SearchAttributeKey.for_keyword("OcwAccount")
OCW_SYMBOL = SearchAttributeKey.for_keyword("OcwSymbol")
OCW_POSITION_STATUS = SearchAttributeKey.for_keyword("OcwPositionStatus")
OCW_EXIT_REASON = SearchAttributeKey.for_keyword("OcwExitReason")
OCW_DECIDED_BY = SearchAttributeKey.for_keyword("OcwDecidedBy")

ALL = (OCW_ACCOUNT, OCW_SYMBOL, OCW_POSITION_STATUS, OCW_EXIT_REASON, OCW_DECIDED_BY)
NAMES = tuple(k.name for k in ALL)
TYPE_NAME = {SearchAttributeIndexedValueType.KEYWORD: "Keyword"}

# `temporal server start-dev` flags that register them on the embedded server
DEV_SERVER_FLAGS: tuple[str, ...] = tuple(
    arg
    for k in ALL
    for arg in ("--search-attribute", f"{k.name}={TYPE_NAME[k.indexed_value_type]}")
)
