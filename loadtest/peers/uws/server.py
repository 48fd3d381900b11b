"""Peer "uws": uWebSockets through PyPI socketify, using uWS's built-in
pub/sub for topics. Speaks ringcast's JSON subset and HTTP publish API."""
import itertools
import json
import sys

from socketify import App, AppListenOptions, CompressOptions, OpCode

port = int(sys.argv[1]) if len(sys.argv) > 1 else 9005
app = App()
conn_ids = itertools.count()


def user_topic(user_type, user_id):
    return f"\x00user/{user_type}/{user_id}"


def message(topic, data):
    return json.dumps({"type": "message", "topic": topic, "data": data}, separators=(",", ":"))


def ws_upgrade(res, req, socket_context):
    user_data = {"user_id": req.get_query("user_id"), "user_type": req.get_query("user_type") or "user"}
    res.upgrade(
        req.get_header("sec-websocket-key"),
        req.get_header("sec-websocket-protocol"),
        req.get_header("sec-websocket-extensions"),
        socket_context,
        user_data,
    )


def ws_open(ws):
    d = ws.get_user_data() or {}
    uid, utype = d.get("user_id"), d.get("user_type", "user")
    ws.subscribe("\x00broadcast")
    if uid:
        ws.subscribe(user_topic(utype, uid))
        auth = {"type": "auth_success", "user_type": utype, "user_id": uid, "conn_id": str(next(conn_ids))}
    else:
        auth = {"type": "auth_success", "user_type": "anonymous", "user_id": None, "conn_id": str(next(conn_ids))}
    ws.send(json.dumps(auth), OpCode.TEXT)


def ws_message(ws, msg, opcode):
    try:
        m = json.loads(msg)
    except ValueError:
        ws.send('{"type":"error","message":"bad json"}', OpCode.TEXT)
        return
    kind, mid, topic = m.get("type"), m.get("id"), m.get("topic")
    if kind == "subscribe":
        ws.subscribe(topic)
        ws.send(json.dumps({"type": "subscribed", "topic": topic, "id": mid, "recovered": False}), OpCode.TEXT)
    elif kind == "unsubscribe":
        ws.unsubscribe(topic)
        ws.send(json.dumps({"type": "unsubscribed", "topic": topic, "id": mid}), OpCode.TEXT)
    elif kind == "publish":
        app.publish(topic, message(topic, m.get("data")), OpCode.TEXT)
        ws.send(json.dumps({"type": "ack", "id": mid}), OpCode.TEXT)
    elif kind == "ping":
        ws.send(json.dumps({"type": "pong", "id": mid}), OpCode.TEXT)
    else:
        ws.send(json.dumps({"type": "error", "message": "unknown type", "id": mid}), OpCode.TEXT)


# socketify may free a response whose body is still being read (crash in
# uws_generic_on_data_handler): keep a strong reference until it is answered.
pending = set()


def reply(res, status, obj):
    pending.discard(res)
    res.write_status(status)
    res.write_header("Content-Type", "application/json")
    res.end(json.dumps(obj))


async def http_publish(res, req):
    pending.add(res)
    b = await res.get_json()
    if not isinstance(b, dict) or not isinstance(b.get("topic"), str):
        return reply(res, 400, {"ok": False, "error": "topic"})
    app.publish(b["topic"], message(b["topic"], b.get("data")), OpCode.TEXT)
    reply(res, 200, {"ok": True})


async def http_broadcast(res, req):
    pending.add(res)
    b = await res.get_json() or {}
    app.publish("\x00broadcast", message("broadcast", b.get("data")), OpCode.TEXT)
    reply(res, 200, {"ok": True})


async def http_user(res, req):
    pending.add(res)
    parts = req.get_url().split("/")  # /api/v1/users/{type}/{id}/send
    utype, uid = parts[4], parts[5]
    b = await res.get_json() or {}
    app.publish(user_topic(utype, uid), message("user", b.get("data")), OpCode.TEXT)
    reply(res, 200, {"ok": True})


def http_stats(res, req):
    reply(res, 200, {"ok": True, "connections": app.num_subscribers("\x00broadcast")})


app.ws(
    "/ws",
    {
        "compression": CompressOptions.DISABLED,
        "max_payload_length": 16 * 1024 * 1024,
        "idle_timeout": 960,
        "upgrade": ws_upgrade,
        "open": ws_open,
        "message": ws_message,
    },
)
app.post("/api/v1/publish", http_publish)
app.post("/api/v1/broadcast", http_broadcast)
app.post("/api/v1/users/*", http_user)
app.get("/api/v1/stats", http_stats)
app.any("/*", lambda res, req: reply(res, 404, {"ok": False, "error": "not found"}))
app.listen(AppListenOptions(port=port, host="127.0.0.1"), lambda config: print(f"uws peer listening on {port}", file=sys.stderr))
app.run()
