"""GET /images/{token}.{ext}: a generated image behind its signed, expiring URL (generation/pipeline/storage.py)."""
from django.http import HttpResponse, JsonResponse

from generation.errors import envelope
from generation.pipeline import storage


def image_file(request, token: str, ext: str):
    """Serve a stored image behind its signed URL: 410 once expired, 404 if the token is forged or the image gone."""
    try:
        handle, content_type = storage.open_signed(token)
    except storage.ImageExpired:
        return JsonResponse(envelope("This image URL has expired. Image URLs are valid for 60 minutes.",
                                     type="invalid_request_error", code="url_expired"), status=410)
    except storage.ImageNotFound:
        return JsonResponse(envelope("Image not found.", type="invalid_request_error", code="not_found"), status=404)
    with handle:  # images are a few MB at most: one read, no sync iterator for the ASGI handler to drain
        response = HttpResponse(handle.read(), content_type=content_type)
    response["Cache-Control"] = "private, max-age=3600"
    return response
