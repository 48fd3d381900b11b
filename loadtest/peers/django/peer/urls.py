from django.urls import path

from . import views

urlpatterns = [
    path("api/v1/publish", views.publish),
    path("api/v1/broadcast", views.broadcast),
    path("api/v1/users/<str:user_type>/<str:user_id>/send", views.send_user),
    path("api/v1/stats", views.stats),
]
