//! The OpenAPI 3 description of the backend API, served at `/api/v1/openapi.json`.
//! A test walks every path in it against a running server, so it cannot drift from the
//! routes in [`super::handle`].
use serde_json::{json, Value};

fn op(summary: &str, body: Option<Value>, response: Value) -> Value {
    let mut o = json!({
        "summary": summary,
        "security": [{ "apikey": [] }],
        "responses": {
            "200": { "description": "OK", "content": { "application/json": { "schema": response } } },
            "400": { "$ref": "#/components/responses/Error" },
            "401": { "$ref": "#/components/responses/Error" },
            "403": { "$ref": "#/components/responses/Error" },
            "404": { "$ref": "#/components/responses/Error" },
            "422": { "$ref": "#/components/responses/Error" }
        }
    });
    if let Some(b) = body {
        o["requestBody"] =
            json!({ "required": true, "content": { "application/json": { "schema": b } } });
    }
    o
}

fn obj(props: Value, required: &[&str]) -> Value {
    json!({ "type": "object", "properties": props, "required": required })
}

fn user_params() -> Value {
    json!([
        { "name": "user_type", "in": "path", "required": true, "schema": { "type": "string" } },
        { "name": "user_id", "in": "path", "required": true, "schema": { "type": "string" } }
    ])
}

fn conn_param() -> Value {
    json!([{ "name": "conn_id", "in": "path", "required": true, "schema": { "type": "string" } }])
}

pub fn document() -> String {
    let ok = obj(json!({ "ok": { "type": "boolean" } }), &["ok"]);
    let data = obj(json!({ "data": {} }), &["data"]);
    let conn_info = obj(
        json!({
            "conn_id": { "type": "string" }, "app": { "type": "string" }, "endpoint": { "type": "string" },
            "user_type": { "type": ["string", "null"] }, "user_id": { "type": ["string", "null"] },
            "connected_at": { "type": "integer" }, "remote_addr": { "type": "string" }
        }),
        &["conn_id", "app", "endpoint", "connected_at"],
    );
    let with_params = |mut o: Value, params: Value| {
        o["parameters"] = params;
        o
    };
    let doc = json!({
        "openapi": "3.0.3",
        "info": { "title": "ringcast backend API", "version": env!("CARGO_PKG_VERSION") },
        "components": {
            "securitySchemes": { "apikey": { "type": "apiKey", "in": "header", "name": "Authorization", "description": "`apikey KEY`" } },
            "responses": { "Error": { "description": "Error", "content": { "application/json": { "schema": obj(json!({
                "error": obj(json!({ "status": { "type": "integer" }, "message": { "type": "string" } }), &["status", "message"])
            }), &["error"]) } } } }
        },
        "paths": {
            "/api/v1/publish": { "post": op("Publish to a topic's subscribers", Some(obj(json!({ "topic": { "type": "string" }, "data": {} }), &["topic", "data"])), ok.clone()) },
            "/api/v1/broadcast": { "post": op("Send to every connection of the app (admin: `all_apps`)", Some(obj(json!({ "data": {}, "all_apps": { "type": "boolean" } }), &["data"])), ok.clone()) },
            "/api/v1/batch": { "post": op("Run many commands in order", Some(obj(json!({ "commands": { "type": "array", "items": obj(json!({ "method": { "type": "string", "enum": super::METHODS }, "params": { "type": "object" } }), &["method"]) } }), &["commands"])), obj(json!({ "results": { "type": "array", "items": {} } }), &["results"])) },
            "/api/v1/stats": { "get": op("Counts for the app (and the node)", None, json!({ "type": "object" })) },
            "/api/v1/users": { "get": with_params(op("Online users", None, obj(json!({ "count": { "type": "integer" }, "users": { "type": "array", "items": obj(json!({ "user_type": { "type": "string" }, "user_id": { "type": "string" } }), &["user_type", "user_id"]) } }), &["count", "users"])), json!([{ "name": "user_type", "in": "query", "required": false, "schema": { "type": "string" } }])) },
            "/api/v1/users/{user_type}/{user_id}/send": { "post": with_params(op("Send to every connection of a user", Some(data.clone()), ok.clone()), user_params()) },
            "/api/v1/users/{user_type}/{user_id}/online": { "get": with_params(op("Is the user online?", None, obj(json!({ "online": { "type": "boolean" }, "connections": { "type": "integer" } }), &["online", "connections"])), user_params()) },
            "/api/v1/users/{user_type}/{user_id}/connections": { "get": with_params(op("A user's connections", None, obj(json!({ "connections": { "type": "array", "items": conn_info.clone() } }), &["connections"])), user_params()) },
            "/api/v1/users/{user_type}/{user_id}/disconnect": { "post": with_params(op("Disconnect every connection of a user (close 4000)", None, obj(json!({ "ok": { "type": "boolean" }, "disconnected": { "type": "integer" } }), &["ok", "disconnected"])), user_params()) },
            "/api/v1/connections/{conn_id}": { "get": with_params(op("Connection info", None, conn_info), conn_param()) },
            "/api/v1/connections/{conn_id}/send": { "post": with_params(op("Send to one connection", Some(data), ok.clone()), conn_param()) },
            "/api/v1/connections/{conn_id}/disconnect": { "post": with_params(op("Disconnect one connection (close 4000)", None, ok), conn_param()) },
            "/api/v1/topics/{topic}/subscribers": { "get": with_params(op("A topic's subscribers", None, obj(json!({ "topic": { "type": "string" }, "count": { "type": "integer" }, "subscribers": { "type": "array", "items": {} } }), &["topic", "count", "subscribers"])), json!([{ "name": "topic", "in": "path", "required": true, "schema": { "type": "string" } }])) },
            "/api/v1/openapi.json": { "get": op("This document", None, json!({ "type": "object" })) }
        }
    });
    doc.to_string()
}
