"""WebSocket consumer speaking ringcast's JSON subset over channel-layer groups."""
from urllib.parse import parse_qs
import itertools

from channels.generic.websocket import AsyncJsonWebsocketConsumer

_conn_ids = itertools.count()


def user_group(user_type, user_id):
    return f"user.{user_type}.{user_id}"[:99]


class PeerConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self):
        qs = parse_qs(self.scope.get("query_string", b"").decode())
        self.user_id = (qs.get("user_id") or [None])[0]
        self.user_type = (qs.get("user_type") or ["user"])[0]
        self.topics = set()
        await self.accept()
        await self.channel_layer.group_add("broadcast", self.channel_name)
        conn_id = str(next(_conn_ids))
        if self.user_id:
            await self.channel_layer.group_add(user_group(self.user_type, self.user_id), self.channel_name)
            await self.send_json({"type": "auth_success", "user_type": self.user_type,
                                  "user_id": self.user_id, "conn_id": conn_id})
        else:
            await self.send_json({"type": "auth_success", "user_type": "anonymous",
                                  "user_id": None, "conn_id": conn_id})

    async def disconnect(self, code):
        for t in self.topics:
            await self.channel_layer.group_discard(t, self.channel_name)
        await self.channel_layer.group_discard("broadcast", self.channel_name)
        if self.user_id:
            await self.channel_layer.group_discard(user_group(self.user_type, self.user_id), self.channel_name)

    async def receive_json(self, content, **kwargs):
        kind = content.get("type")
        mid = content.get("id")
        topic = content.get("topic")
        if kind == "subscribe":
            await self.channel_layer.group_add(topic, self.channel_name)
            self.topics.add(topic)
            await self.send_json({"type": "subscribed", "topic": topic, "id": mid, "recovered": False})
        elif kind == "unsubscribe":
            await self.channel_layer.group_discard(topic, self.channel_name)
            self.topics.discard(topic)
            await self.send_json({"type": "unsubscribed", "topic": topic, "id": mid})
        elif kind == "publish":
            await self.channel_layer.group_send(
                topic, {"type": "deliver", "topic": topic, "data": content.get("data")})
            await self.send_json({"type": "ack", "id": mid})
        elif kind == "ping":
            await self.send_json({"type": "pong", "id": mid})
        else:
            await self.send_json({"type": "error", "message": "unknown type", "id": mid})

    async def deliver(self, event):
        await self.send_json({"type": "message", "topic": event["topic"], "data": event["data"]})
