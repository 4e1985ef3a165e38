"""The OpenAPI 3.1 description of the collector's admin and report API, served at /openapi.json.

The paths are built from the API's route table (collector/api.py ROUTES): each route declares there, once,
its method, path, handler, scope and an ``Operation`` (summary, query parameters, request and response
schemas). This module holds the schemas the operations name and the rules every operation shares: path ids,
security, the error answers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

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
            "maxLength": 2000,
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


Schema = dict[str, Any]
OBJECT: Schema = {"type": "object"}
FORMAT: Schema = {"name": "format", "in": "query", "schema": {"enum": ["json", "csv"]}}
ORDER: Schema = {"name": "order", "in": "query", "schema": {"enum": ["asc", "desc"]}}

# Request bodies.
CAMPAIGN: Schema = {
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
        "count_everything": {
            "type": "boolean",
            "description": "Count every click as a person's and fire actions for all (internal test sends); "
            "verdicts are still kept. Default false",
        },
        "decoy_link": {
            "type": "boolean",
            "description": "Rewriting adds a link people cannot see or reach; a fetch of it marks the message's "
            "burst a scanner's (docs/click-truth.md). Default false",
        },
        "anonymous": {
            "type": "boolean",
            "description": "Store the campaign's clicks without their contact: counted in reports, never in a "
            "contact's timeline or who-clicked list, and no link action fires. Default false",
        },
        "full_client_ips": {
            "type": "boolean",
            "description": "Keep the full client address of the campaign's clicks; otherwise only its network "
            "(IPv4 /24, IPv6 /48) is stored (docs/privacy.md). Default false",
        },
        "unsubscribe_list": {
            "type": "string",
            "maxLength": 200,
            "description": "The list a one-click unsubscribe (RFC 8058) from the campaign's messages removes the "
            "contact from; set, rewriting gives each recipient's message the List-Unsubscribe and "
            "List-Unsubscribe-Post headers (docs/sending.md). Empty: none",
        },
        "unsubscribe_webhook": {
            "type": "string",
            "maxLength": 2000,
            "description": "Where each unsubscribe sends a contact.unsubscribed event (a webhook endpoint, signed; "
            "its secret is in new_webhook_endpoints the first time). Empty: none",
        },
    },
}
BLOCK: Schema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["reason"],
    "properties": {
        "campaign_id": {"type": "integer", "minimum": 0},
        "link_id": {"type": "integer", "minimum": 0, "description": "With campaign_id: that link only"},
        "destination_host": {
            "type": "string",
            "maxLength": 253,
            "description": "Instead of a campaign: every link to this host and the hosts under it",
        },
        "reason": {"type": "string", "minLength": 1, "maxLength": 500},
    },
}
ACTIONS_ON: Schema = {
    "name": "on",
    "in": "query",
    "description": "Whose first click fires the actions: human (a person's, the default for a new link) or "
    "every_click (for links only machines are meant to fetch); absent: unchanged",
    "schema": {"enum": ["human", "every_click"]},
}
MESSAGE: Schema = {
    "type": "object",
    "required": ["html"],
    "additionalProperties": False,
    "properties": {
        "html": {"type": "string"},
        "text": {"type": "string"},
        "contact_id": {"type": "integer", "minimum": 1},
        "sent_at": {"type": "integer", "minimum": 0},
    },
}
ACTIONS: Schema = {"type": "array", "maxItems": 20, "items": {"$ref": "#/components/schemas/Action"}}

# Responses.
ACTIONS_SET: Schema = {
    "type": "object",
    "properties": {
        "actions": {"type": "array", "items": {"$ref": "#/components/schemas/Action"}},
        "on": {"enum": ["human", "every_click"]},
        "new_webhook_endpoints": {
            "type": "array",
            "items": {"$ref": "#/components/schemas/WebhookEndpointWithSecret"},
        },
    },
}
DELIVERIES: Schema = {
    "type": "object",
    "properties": {
        "deliveries": {"type": "array", "items": {"$ref": "#/components/schemas/Delivery"}},
        "next_after": {"type": ["integer", "null"]},
    },
}
ENDPOINTS: Schema = {
    "type": "object",
    "properties": {
        "endpoints": {"type": "array", "items": {"$ref": "#/components/schemas/WebhookEndpoint"}},
        "next_after": {"type": ["integer", "null"]},
    },
}
ENDPOINT_WITH_SECRET: Schema = {"$ref": "#/components/schemas/WebhookEndpointWithSecret"}


@dataclass(frozen=True, slots=True)
class Operation:
    """What the document says about one route, beside what the route table already says (method, path,
    scope). Path parameters come from the path itself."""

    summary: str
    query: tuple[Schema, ...] = ()
    response: Schema | None = None  # the 200's JSON; None: OBJECT
    body: Schema | None = None  # a required JSON request body
    csv: bool = False  # the 200 may also be text/csv
    busy: bool = False  # may answer 503 when the rewrite workers are all busy and their queue is full


class Documented(Protocol):
    """A route as the document needs it (collector/api.py Route)."""

    @property
    def method(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def scope(self) -> str | None: ...
    @property
    def doc(self) -> Operation | None: ...


def integer(name: str, maximum: int, where: str = "query") -> Schema:
    """A parameter written with the digits 0-9 only, from 0 to ``maximum``."""
    return {
        "name": name,
        "in": where,
        "required": where == "path",
        "schema": {"type": "integer", "minimum": 0, "maximum": maximum},
    }


# Path parameters that are not numbers: a report pages' session id.
PATH_STRINGS: dict[str, Schema] = {"session_id": {"type": "string", "pattern": "^[0-9a-f]{16}$"}}


def _path_parameter(name: str, path_ids: Mapping[str, int]) -> Schema:
    if name in PATH_STRINGS:
        return {"name": name, "in": "path", "required": True, "schema": PATH_STRINGS[name]}
    return integer(name, path_ids[name], "path")


def _operation(route: Documented, doc: Operation, path_ids: Mapping[str, int]) -> Schema:
    scope = route.scope
    assert scope is not None, f"{route.method} {route.path} is documented but needs no API key"
    params = [_path_parameter(name, path_ids) for name in re.findall(r"{(\w+)}", route.path)]
    content: Schema = {"application/json": {"schema": doc.response or OBJECT}}
    if doc.csv:
        content["text/csv"] = {"schema": {"type": "string"}}
    op: Schema = {
        "summary": doc.summary,
        "security": [{"apiKey": []}],
        "x-scope": scope,
        "parameters": [*params, *doc.query],
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
    if doc.busy:
        op["responses"]["503"] = {
            "description": "Every tokenizer process is busy and the queue is full; retry later",
            "content": {"application/json": {"schema": ERROR}},
        }
    if doc.body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": doc.body}}}
    return op


def paths(routes: Iterable[Documented], path_ids: Mapping[str, int]) -> Schema:
    """The document's paths: every route with an Operation, in the route table's order; ``path_ids`` gives
    the largest value of each path parameter."""
    out: Schema = {}
    for route in routes:
        if route.doc is not None:
            out.setdefault(route.path, {})[route.method.lower()] = _operation(route, route.doc, path_ids)
    return out


def document(routes: Iterable[Documented], path_ids: Mapping[str, int]) -> Schema:
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
        "paths": paths(routes, path_ids),
    }
