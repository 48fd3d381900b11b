"""HTTP publish API for the Channels peer."""
import json

from channels.layers import get_channel_layer
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt

from .consumers import user_group


def _body(request):
    try:
        return json.loads(request.body or b"{}")
    except ValueError:
        return None


@csrf_exempt
async def publish(request):
    b = _body(request)
    if request.method != "POST" or not b or not isinstance(b.get("topic"), str):
        return JsonResponse({"ok": False, "error": "topic"}, status=400)
    await get_channel_layer().group_send(
        b["topic"], {"type": "deliver", "topic": b["topic"], "data": b.get("data")})
    return JsonResponse({"ok": True})


@csrf_exempt
async def broadcast(request):
    b = _body(request) or {}
    await get_channel_layer().group_send(
        "broadcast", {"type": "deliver", "topic": "broadcast", "data": b.get("data")})
    return JsonResponse({"ok": True})


@csrf_exempt
async def send_user(request, user_type, user_id):
    b = _body(request) or {}
    await get_channel_layer().group_send(
        user_group(user_type, user_id), {"type": "deliver", "topic": "user", "data": b.get("data")})
    return JsonResponse({"ok": True})


async def stats(request):
    return JsonResponse({"ok": True})
