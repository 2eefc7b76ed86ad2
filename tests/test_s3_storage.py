"""Images stored in S3 through django-storages: real boto3 against moto's S3 server on 127.0.0.1."""
import httpx
import pytest

from tests.conftest import free_port


@pytest.fixture(scope="module")
def s3_endpoint():
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_storage(s3_endpoint, settings, monkeypatch):
    import boto3

    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(name, value)
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket="imagegate-test")
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {"bucket_name": "imagegate-test", "endpoint_url": s3_endpoint, "region_name": "us-east-1",
                        "default_acl": None, "querystring_auth": True, "file_overwrite": False},
        },
    }
    return client


def test_url_images_are_stored_in_s3_and_served_through_the_signed_url(s3_storage, openai_client):
    result = openai_client.images.generate(model="local-preview", prompt="harbour at dawn", size="256x256")
    objects = s3_storage.list_objects_v2(Bucket="imagegate-test")["Contents"]
    assert len(objects) == 1 and objects[0]["Key"].startswith("images/") and objects[0]["Key"].endswith(".png")
    stored = s3_storage.get_object(Bucket="imagegate-test", Key=objects[0]["Key"])["Body"].read()
    response = httpx.get(result.data[0].url)
    assert response.status_code == 200 and response.content == stored and stored[:4] == b"\x89PNG"

    from datetime import timedelta

    from generation.models import StoredImage
    from generation.pipeline import storage

    row = StoredImage.all_tenants_unsafe.get()
    assert storage.delete_expired(now=row.expires_at + timedelta(seconds=1)) == 1
    assert s3_storage.list_objects_v2(Bucket="imagegate-test").get("KeyCount") == 0
    assert httpx.get(result.data[0].url).status_code == 404
