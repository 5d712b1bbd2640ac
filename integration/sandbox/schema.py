"""The sandbox's REST routes and the Swagger 2.0 schema Magento serves for them.

Magento answers ``GET /rest/{store}/schema?services=all`` (and ``/rest/{store}/async/schema``
when Magento_WebapiAsync is installed) with a Swagger 2.0 document generated for the caller:
``AbstractSchemaGenerator::getAllowedServicesMetadata`` drops every method whose ACL resources
the caller lacks (``app/code/Magento/Webapi/Model/AbstractSchemaGenerator.php``), so an
integration sees exactly the operations it may call. Operations are tagged with the service
name (``catalogProductRepositoryV1``), ``operationId`` is tag + method + HTTP verb, ``basePath``
is the request path up to ``/schema`` and ``info`` is ``{"version": "2.4", "title": "Magento
Community"}`` (``app/code/Magento/Webapi/Model/Rest/Swagger/Generator.php``). A search's
``searchCriteria`` is flattened into query parameters with the getters' camelCase names
(``searchCriteria[filterGroups][0][filters][0][field]``).
"""

from __future__ import annotations

from dataclasses import dataclass

ERROR = {"$ref": "#/definitions/error-response"}
SEARCH_PARAMETERS = [
    {"name": f"searchCriteria[filterGroups][0][filters][0][{name}]", "in": "query", "type": "string",
     "description": description}
    for name, description in (("field", "Field"), ("value", "Value"), ("conditionType", "Condition type"))
] + [
    {"name": "searchCriteria[sortOrders][0][field]", "in": "query", "type": "string", "description": "Sorting field."},
    {"name": "searchCriteria[sortOrders][0][direction]", "in": "query", "type": "string",
     "description": "Sorting direction."},
    {"name": "searchCriteria[pageSize]", "in": "query", "type": "integer", "description": "Page size."},
    {"name": "searchCriteria[currentPage]", "in": "query", "type": "integer", "description": "Current page."},
]


@dataclass(frozen=True)
class Route:
    method: str
    path: str          # Swagger form, {params}
    resource: str      # the ACL resource webapi.xml names
    service: str       # the tag
    operation: str     # the PHP method
    description: str
    search: bool = False
    body: str | None = None  # the body parameter's name, for writes
    async_events: bool = False  # only with aligent/magento-async-events installed


ROUTES = (
    Route("GET", "/V1/store/storeViews", "Magento_Backend::store", "storeStoreRepositoryV1", "getList",
          "Retrieve list of all stores"),
    Route("GET", "/V1/store/storeConfigs", "Magento_Backend::store", "storeStoreConfigManagerV1",
          "getStoreConfigs", "Get store configs"),
    Route("GET", "/V1/products", "Magento_Catalog::products", "catalogProductRepositoryV1", "getList",
          "Get product list", search=True),
    Route("POST", "/V1/products", "Magento_Catalog::products", "catalogProductRepositoryV1", "save",
          "Create product", body="product"),
    Route("GET", "/V1/products/{sku}", "Magento_Catalog::products", "catalogProductRepositoryV1", "get",
          "Get info about product by product SKU"),
    Route("PUT", "/V1/products/{sku}", "Magento_Catalog::products", "catalogProductRepositoryV1", "save",
          "Create product", body="product"),
    Route("DELETE", "/V1/products/{sku}", "Magento_Catalog::products", "catalogProductRepositoryV1", "deleteById",
          "Delete product"),
    Route("GET", "/V1/orders", "Magento_Sales::sales", "salesOrderRepositoryV1", "getList",
          "Lists orders that match specified search criteria.", search=True),
    Route("GET", "/V1/customers/search", "Magento_Customer::customer", "customerCustomerRepositoryV1", "getList",
          "Retrieve customers which match a specified criteria.", search=True),
    Route("GET", "/V1/inventory/source-items", "Magento_Backend::store", "inventoryApiSourceItemRepositoryV1",
          "getList", "Find SourceItems by SearchCriteria", search=True),
    # aligent/magento-async-events (etc/webapi.xml, etc/acl.xml): subscriptions.
    Route("GET", "/V1/async_events", "Aligent_AsyncEvents::async_events_get", "asyncEventsAsyncEventRepositoryV1",
          "getList", "List async event subscriptions", search=True, async_events=True),
    Route("POST", "/V1/async_event", "Aligent_AsyncEvents::async_events_save", "asyncEventsAsyncEventRepositoryV1",
          "save", "Subscribe to an asynchronous event", body="asyncEvent", async_events=True),
    Route("GET", "/V1/async_event/{subscriptionId}", "Aligent_AsyncEvents::async_events_get",
          "asyncEventsAsyncEventRepositoryV1", "get", "Get an async event subscription", async_events=True),
    Route("PUT", "/V1/async_event/{subscriptionId}", "Aligent_AsyncEvents::async_events_save",
          "asyncEventsAsyncEventRepositoryV1", "save", "Update an async event subscription", body="asyncEvent",
          async_events=True),
)

#: The resources an integration can be granted here, as Magento's *API* tab names them.
RESOURCES = {
    "Magento_Backend::store": "Stores › Settings › All Stores",
    "Magento_Catalog::products": "Catalog › Inventory › Products",
    "Magento_Sales::sales": "Sales",
    "Magento_Customer::customer": "Customers",
    "Aligent_AsyncEvents::async_events_get": "Asynchronous Events › Get",
    "Aligent_AsyncEvents::async_events_save": "Asynchronous Events › Save",
}


def allowed(granted, resource: str) -> bool:
    """``Magento_Backend::all`` is *Resource Access: All*; otherwise the resource itself."""
    return "Magento_Backend::all" in granted or resource in granted


def routes(*, msi: bool, async_events: bool) -> list[Route]:
    return [r for r in ROUTES if (async_events or not r.async_events)
            and (msi or r.path != "/V1/inventory/source-items")]


def document(granted, *, host: str, base_path: str, scheme: str, msi: bool, async_events: bool,
             version: str) -> dict:
    """The Swagger 2.0 document for a caller holding ``granted`` (``()``: an anonymous caller,
    who sees no operation here since every sandbox route needs a resource)."""
    paths: dict[str, dict] = {}
    tags: dict[str, dict] = {}
    for route in routes(msi=msi, async_events=async_events):
        if not allowed(granted, route.resource):
            continue
        tags.setdefault(route.service, {"name": route.service, "description": f"{route.service} service"})
        operation = {
            "tags": [route.service], "description": route.description,
            "operationId": f"{route.service}{route.operation[0].upper()}{route.operation[1:]}"
                           f"{route.method.capitalize()}",
            "responses": {"200": {"description": "200 Success."},
                          "401": {"description": "401 Unauthorized", "schema": ERROR},
                          "default": {"description": "Unexpected error", "schema": ERROR}},
        }
        parameters = [{"name": name, "in": "path", "type": "string", "required": True}
                      for name in _path_parameters(route.path)]
        if route.search:
            parameters += SEARCH_PARAMETERS
        if route.body:
            parameters.append({"name": operation["operationId"] + "Body", "in": "body", "schema": {
                "required": [route.body], "properties": {route.body: {"type": "object"}}, "type": "object"}})
        if parameters:
            operation["parameters"] = parameters
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return {
        "swagger": "2.0",
        "info": {"version": version.rsplit(".", 1)[0] if version.count(".") > 1 else version,
                 "title": "Magento Community"},
        "host": host, "basePath": base_path, "schemes": [scheme],
        "tags": list(tags.values()), "paths": paths,
        "definitions": {"error-response": {"type": "object", "properties": {
            "message": {"type": "string"}, "parameters": {"type": "array", "items": {"type": "string"}}},
            "required": ["message"]}},
    }


def _path_parameters(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{") and part.endswith("}")]
