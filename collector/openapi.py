"""The OpenAPI 3.1 description of the collector's admin and report API, served at /openapi.json."""

from __future__ import annotations

from typing import Any

from common import __version__

ERROR = {"$ref": "#/components/schemas/Error"}
ACTION = {
    "type": "object",
    "required": ["type"],
    "properties": {
        "type": {
            "enum": [
                "add_tag",
                "remove_tag",
                "start_automation",
                "end_automation",
                "subscribe",
                "unsubscribe",
                "webhook",
            ]
        },
        "tag": {"type": "string", "maxLength": 200},
        "automation": {"type": "string", "maxLength": 200},
        "list": {"type": "string", "maxLength": 200},
        "url": {
            "type": "string",
            "format": "uri",
            "description": "webhook: an absolute http(s) URL without user:pass@. Loopback, link-local, private, "
            "multicast and other non-public addresses are refused (an IP literal at once, a name's addresses at "
            "each delivery) unless the collector's CLICKEDGE_WEBHOOK_ALLOW_NETWORKS opens them",
        },
    },
    "additionalProperties": False,
}


ENDPOINT = {
    "type": "object",
    "required": ["id", "url", "generation", "created_at", "rotated_at"],
    "properties": {
        "id": {"type": "integer"},
        "url": {"type": "string", "description": "without user name and password"},
        "generation": {"type": "integer", "minimum": 1, "description": "1, plus one per rotation"},
        "created_at": {"type": "string", "format": "date-time"},
        "rotated_at": {"type": ["string", "null"], "format": "date-time"},
    },
}


TIME = {"type": ["string", "null"], "format": "date-time"}
DELIVERY = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "idempotency_key": {"type": "string", "format": "uuid"},
        "endpoint": {"type": ["integer", "null"], "description": "the webhook endpoint (see /v1/webhooks)"},
        "url": {"type": "string", "description": "without user name and password"},
        "contact_id": {"type": ["integer", "null"]},
        "event_id": {"type": ["string", "null"], "format": "uuid"},
        "state": {"enum": ["pending", "delivered", "failed"]},
        "attempts": {"type": "integer"},
        "last_error": {
            "type": ["string", "null"],
            "description": "e.g. HTTP 500, or refused: ... (the destination policy); no credentials",
        },
        "created_at": {"type": "string", "format": "date-time"},
        "next_attempt_at": {**TIME, "description": "when pending"},
        "delivered_at": TIME,
        "failed_at": TIME,
    },
}


def _id(name: str, maximum: int = 2**32 - 1, where: str = "path") -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": where == "path",
        "schema": {"type": "integer", "minimum": 0, "maximum": maximum},
    }


def _op(
    summary: str,
    scope: str,
    params: list[dict[str, Any]],
    ok: dict[str, Any],
    body: dict[str, Any] | None = None,
    csv: bool = False,
) -> dict[str, Any]:
    content: dict[str, Any] = {"application/json": {"schema": ok}}
    if csv:
        content["text/csv"] = {"schema": {"type": "string"}}
    op: dict[str, Any] = {
        "summary": summary,
        "security": [{"apiKey": []}],
        "x-scope": scope,
        "parameters": params,
        "responses": {
            "200": {"description": "OK", "content": content},
            **{
                code: {"description": why, "content": {"application/json": {"schema": ERROR}}}
                for code, why in (
                    ("400", "Bad input; the error names the problem"),
                    ("401", "Missing or unknown API key"),
                    ("403", f"The key lacks the {scope} scope"),
                    ("404", "Not found"),
                    ("409", "Conflict"),
                )
            },
        },
    }
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return op


def _busy(op: dict[str, Any]) -> dict[str, Any]:
    """An operation that may answer 503 when its workers are all busy and its queue is full."""
    op["responses"]["503"] = {
        "description": "Every tokenizer process is busy and the queue is full; retry later",
        "content": {"application/json": {"schema": ERROR}},
    }
    return op


def document() -> dict[str, Any]:
    campaign = _id("campaign_id")
    link = _id("link_id")
    obj = {"type": "object"}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Clickedge collector admin and report API",
            "version": __version__,
            "description": "Campaigns, link rewriting, link actions and click reports. Authenticate with an "
            "API key: `Authorization: Bearer ck_...`; `write` keys may also read.",
        },
        "components": {
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
                "Action": ACTION,
                "WebhookEndpoint": ENDPOINT,
                "Delivery": DELIVERY,
                "WebhookEndpointWithSecret": {
                    "allOf": [
                        {"$ref": "#/components/schemas/WebhookEndpoint"},
                        {
                            "type": "object",
                            "required": ["secret"],
                            "properties": {
                                "secret": {
                                    "type": "string",
                                    "description": "whsec_...: the receiver keys HMAC-SHA256 with this string's bytes",
                                }
                            },
                        },
                    ]
                },
            },
        },
        "paths": {
            "/v1/campaigns/{campaign_id}": {
                "put": _op(
                    "Create or change a campaign",
                    "write",
                    [campaign],
                    obj,
                    {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "name": {"type": "string", "maxLength": 200},
                            "tracking": {"type": "boolean"},
                            "recipients": {"type": "integer", "minimum": 0},
                            "tracking_url": {
                                "type": "string",
                                "maxLength": 200,
                                "description": "Base URL of the campaign's tracked links, e.g. "
                                "https://t.sender.example (a sender's own tracking domain); "
                                "empty: the collector's CLICKEDGE_PUBLIC_URL",
                            },
                        },
                    },
                ),
                "get": _op("A campaign", "read", [campaign], obj),
            },
            "/v1/campaigns/{campaign_id}/rewrite": {
                "post": _busy(
                    _op(
                        "Rewrite one recipient's message; registers the campaign's links and the recipient",
                        "write",
                        [campaign],
                        obj,
                        {
                            "type": "object",
                            "required": ["html"],
                            "additionalProperties": False,
                            "properties": {
                                "html": {"type": "string"},
                                "text": {"type": "string"},
                                "contact_id": {"type": "integer", "minimum": 1},
                                "sent_at": {"type": "integer", "minimum": 0},
                            },
                        },
                    )
                ),
            },
            "/v1/campaigns/{campaign_id}/links": {
                "get": _op("The campaign's link placements", "read", [campaign], obj)
            },
            "/v1/campaigns/{campaign_id}/links/{link_id}/actions": {
                "put": _op(
                    "Replace a link's actions (audited). A webhook URL named for the first time becomes a "
                    "webhook endpoint; new_webhook_endpoints carries their signing secrets, shown this once",
                    "write",
                    [campaign, link],
                    {
                        "type": "object",
                        "properties": {
                            "actions": {"type": "array", "items": {"$ref": "#/components/schemas/Action"}},
                            "new_webhook_endpoints": {
                                "type": "array",
                                "items": {"$ref": "#/components/schemas/WebhookEndpointWithSecret"},
                            },
                        },
                    },
                    {"type": "array", "maxItems": 20, "items": {"$ref": "#/components/schemas/Action"}},
                ),
            },
            "/v1/campaigns/{campaign_id}/links/{link_id}/webhooks": {
                "get": _op(
                    "The link's webhook deliveries, oldest first: state (pending, delivered, failed), attempts, "
                    "last error, next attempt; paged by delivery id",
                    "read",
                    [campaign, link, _id("after", 2**63 - 1, "query"), _id("limit", 1000, "query")],
                    {
                        "type": "object",
                        "properties": {
                            "deliveries": {"type": "array", "items": {"$ref": "#/components/schemas/Delivery"}},
                            "next_after": {"type": ["integer", "null"]},
                        },
                    },
                )
            },
            "/v1/webhooks": {
                "get": _op(
                    "Webhook endpoints (every URL webhooks go to), without their secrets; paged by id",
                    "read",
                    [_id("after", 2**63 - 1, "query"), _id("limit", 1000, "query")],
                    {
                        "type": "object",
                        "properties": {
                            "endpoints": {"type": "array", "items": {"$ref": "#/components/schemas/WebhookEndpoint"}},
                            "next_after": {"type": ["integer", "null"]},
                        },
                    },
                )
            },
            "/v1/webhooks/{endpoint_id}/rotate": {
                "post": _op(
                    "Give a webhook endpoint a new signing secret, shown this once; the old one stops at once",
                    "write",
                    [_id("endpoint_id", 2**63 - 1)],
                    {"$ref": "#/components/schemas/WebhookEndpointWithSecret"},
                )
            },
            "/v1/campaigns/{campaign_id}/links/{link_id}/actions/audit": {
                "get": _op("Every change of a link's actions: who, when, before, after", "read", [campaign, link], obj)
            },
            "/v1/reports/campaigns/{campaign_id}": {
                "get": _op(
                    "Campaign report: recipients, clicks, unique clicks and clickers, click-through rate, "
                    "per link, per URL, hourly",
                    "read",
                    [campaign],
                    obj,
                )
            },
            "/v1/reports/campaigns/{campaign_id}/links/{link_id}/clickers": {
                "get": _op(
                    "Who clicked a link: contact, first and last click, count; paged by contact id",
                    "read",
                    [
                        campaign,
                        link,
                        _id("after", 2**63 - 1, "query"),
                        _id("limit", 1000, "query"),
                        {"name": "format", "in": "query", "schema": {"enum": ["json", "csv"]}},
                    ],
                    obj,
                    csv=True,
                )
            },
            "/v1/reports/contacts/{contact_id}/timeline": {
                "get": _op(
                    "A contact's clicks and applied actions, in order",
                    "read",
                    [
                        _id("contact_id", 2**63 - 1),
                        _id("limit", 1000, "query"),
                        _id("offset", 2**63 - 1, "query"),
                        {"name": "format", "in": "query", "schema": {"enum": ["json", "csv"]}},
                    ],
                    obj,
                    csv=True,
                )
            },
        },
    }
