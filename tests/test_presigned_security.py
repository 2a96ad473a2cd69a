"""What a presigned URL lets its holder do, checked on a real S3 server.

cargohold hands out presigned S3 URLs (blob GET redirects today, UploadPart
URLs for direct-to-S3 uploads next). Their safety rests on S3 checking the
SigV4 signature and X-Amz-Expires: a holder must not read another key, stretch
the expiry, write another part or upload, or use the URL after it expired.
moto checks none of that (asserted below, so we notice if it starts to), so
these tests run against versitygw (``tests/real_s3.py``) with S3 pointed at it
and DynamoDB left on moto.
"""

from __future__ import annotations

import calendar
import hashlib
import random
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

import pytest

from chalicelib.config import Settings
from chalicelib.core.http import Request, Response
from chalicelib.devserver import local_app
from chalicelib.storage import clients
from chalicelib.storage.blobs import BlobStore, blob_key, large_blob_key
from chalicelib.storage.provision import create_bucket

from .real_s3 import RealS3, real_s3  # noqa: F401

MIB = 1024 * 1024


# -- helpers -------------------------------------------------------------------
@dataclass
class Reply:
    status: int
    body: bytes


def fetch(url: str, method: str = "GET", data: bytes | None = None,
          headers: dict[str, str] | None = None) -> Reply:
    """One plain HTTP request (no signing, no retries), as a browser or docker would."""
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return Reply(reply.status, reply.read())
    except urllib.error.HTTPError as error:
        with error:
            return Reply(error.code, error.read())


def error_code(reply: Reply) -> str:
    """The S3 error code of an XML error body ("" if there is none)."""
    text = reply.body.decode(errors="replace")
    start, end = text.find("<Code>"), text.find("</Code>")
    return text[start + len("<Code>"):end] if 0 <= start < end else ""


def query_value(url: str, name: str) -> str:
    return dict(parse_qsl(urlsplit(url).query))[name]


def with_param(url: str, name: str, value: str) -> str:
    """The same URL with one query parameter's raw value replaced, nothing else."""
    parts = urlsplit(url)
    fields = parts.query.split("&")
    hits = [i for i, field in enumerate(fields) if field.split("=", 1)[0] == name]
    assert len(hits) == 1, f"{name} not in {url}"
    fields[hits[0]] = f"{name}={quote(value, safe='')}"
    return urlunsplit(parts._replace(query="&".join(fields)))


def without_params(url: str, *names: str) -> str:
    parts = urlsplit(url)
    kept = [f for f in parts.query.split("&") if f.split("=", 1)[0] not in names]
    return urlunsplit(parts._replace(query="&".join(kept)))


def with_path(url: str, path: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=path))


def flip_signature(url: str) -> str:
    """The same URL with one hex digit of X-Amz-Signature changed."""
    signature = query_value(url, "X-Amz-Signature")
    flipped = ("1" if signature[0] == "0" else "0") + signature[1:]
    return with_param(url, "X-Amz-Signature", flipped)


def signed_at(url: str) -> int:
    """X-Amz-Date as a Unix time."""
    return calendar.timegm(time.strptime(query_value(url, "X-Amz-Date"), "%Y%m%dT%H%M%SZ"))


def shifted_date(url: str, seconds: int) -> str:
    """X-Amz-Date moved by ``seconds`` (what a holder would do to extend a URL)."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(signed_at(url) + seconds))


def wait_until_expired(url: str, margin: float = 1.0) -> None:
    """Sleep until the server's clock is past the URL's expiry (the thing under
    test is the passage of time, so there is nothing to poll); bounded by
    X-Amz-Expires + ``margin``."""
    expires_at = signed_at(url) + int(query_value(url, "X-Amz-Expires"))
    delay = expires_at + margin - time.time()
    assert delay < 10, "the URL was signed with a long TTL: this would wait too long"
    if delay > 0:
        time.sleep(delay)


def pseudo_random(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def invoke(app, method: str, path: str, body: bytes = b"",
           headers: dict[str, str] | None = None) -> Response:
    path, _, query = path.partition("?")
    response = app(Request.build(method, path, query, headers or {}, body))
    response.body = response.read_body()
    return response


# -- fixtures ------------------------------------------------------------------
@pytest.fixture
def s3_on_real(real_s3: RealS3, moto_url: str,  # noqa: F811
               monkeypatch: pytest.MonkeyPatch) -> Iterator[RealS3]:
    """Point cargohold's own clients' S3 at the real server and DynamoDB at moto.

    ``moto_url`` sets ``AWS_ENDPOINT_URL`` for every service; the
    service-specific variables take precedence over it. moto accepts any
    credentials, so the real server's account is used for both.
    """
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", real_s3.endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", moto_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", real_s3.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", real_s3.secret_key)
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS"):
        monkeypatch.delenv(name, raising=False)
    clients.reset()
    yield real_s3
    clients.reset()  # monkeypatch restores the env after this; the next client sees it


@pytest.fixture
def real_bucket(s3_on_real: RealS3) -> BlobStore:
    """A fresh bucket on the real server, reached through cargohold's BlobStore."""
    name = f"sec-{uuid.uuid4().hex[:12]}"
    store = BlobStore(name, s3_on_real.region)
    store.s3.create_bucket(Bucket=name)
    return store


def provision_real_bucket(bucket: str, region: str) -> None:
    """``create_bucket`` on the real server (versitygw's posix backend has no
    lifecycle rules: provisioning warns and goes on)."""
    create_bucket(bucket, region)
    clients.client("s3", region).head_bucket(Bucket=bucket)


@pytest.fixture
def real_settings(settings: Settings, s3_on_real: RealS3) -> Settings:
    """The registry with redirects on: its table on moto (made by ``settings``
    before S3 was repointed) and a new bucket on the real server."""
    fresh = replace(settings, blob_redirects=True, bucket=f"reg-{uuid.uuid4().hex[:12]}",
                    region=s3_on_real.region)
    provision_real_bucket(fresh.bucket, fresh.region)
    return fresh


# -- presigned GET (blob redirects) -------------------------------------------
def test_presigned_get_rejects_tampering(real_bucket: BlobStore) -> None:
    mine, other = pseudo_random(4000, 1), pseudo_random(4000, 2)
    mine_key, other_key = blob_key(sha256(mine)), blob_key(sha256(other))
    real_bucket.put(mine_key, mine)
    real_bucket.put(other_key, other)
    url = real_bucket.presign_get(mine_key, 60)
    assert query_value(url, "X-Amz-Expires") == "60"

    assert fetch(url) == Reply(200, mine)
    ranged = fetch(url, headers={"Range": "bytes=100-199"})
    assert (ranged.status, ranged.body) == (206, mine[100:200])
    # The rewriting helpers themselves leave a valid URL valid.
    same = with_param(url, "X-Amz-Expires", "60")
    assert fetch(same).status == 200

    tampered = {
        "signature": flip_signature(url),
        "longer expiry": with_param(url, "X-Amz-Expires", "604800"),
        "shorter expiry": with_param(url, "X-Amz-Expires", "59"),
        "other key": with_path(url, f"/{real_bucket.bucket}/{other_key}"),
        "later date": with_param(url, "X-Amz-Date", shifted_date(url, 60)),
    }
    for what, bad in tampered.items():
        reply = fetch(bad)
        assert reply.status == 403, (what, reply)
        assert error_code(reply) == "SignatureDoesNotMatch", (what, reply)
        assert other not in reply.body

    # A GET URL does not authorise a write to the same key.
    put = fetch(url, method="PUT", data=b"overwritten")
    assert put.status == 403, put
    assert real_bucket.read(mine_key) == mine


def test_presigned_get_expires(real_bucket: BlobStore) -> None:
    data = pseudo_random(2000, 3)
    key = blob_key(sha256(data))
    real_bucket.put(key, data)
    short = real_bucket.presign_get(key, 1)
    control = real_bucket.presign_get(key, 60)

    wait_until_expired(short)
    expired = fetch(short)
    assert expired.status == 403, expired
    assert error_code(expired) == "AccessDenied"
    assert b"expired" in expired.body
    assert fetch(control) == Reply(200, data)


def test_moto_accepts_what_real_s3_rejects(moto_url: str) -> None:
    """Why this file needs a real server: moto serves a URL with a changed
    signature or key. If this starts failing, moto began to check SigV4."""
    import boto3
    from botocore.config import Config

    s3 = boto3.session.Session().client(
        "s3", endpoint_url=moto_url, region_name="us-east-1", aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))
    bucket = f"moto-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="mine", Body=b"mine")
    s3.put_object(Bucket=bucket, Key="other", Body=b"other")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "mine"},
                                    ExpiresIn=60)
    assert fetch(url) == Reply(200, b"mine")
    assert fetch(flip_signature(url)) == Reply(200, b"mine")
    assert fetch(with_param(url, "X-Amz-Expires", "604800")) == Reply(200, b"mine")
    assert fetch(with_path(url, f"/{bucket}/other")) == Reply(200, b"other")


# -- the registry's redirect, end to end ----------------------------------------
def test_registry_redirect_on_real_s3(real_settings: Settings, s3_on_real: RealS3) -> None:
    """Push (monolithic, and chunked through an S3 multipart upload), GET → 307
    to the real server, follow → the bytes; a tampered Location → 403."""
    app = local_app(real_settings)
    small = pseudo_random(70000, 4)
    small_digest = sha256(small)
    pushed = invoke(app, "POST", f"/v2/sec/blobs/uploads/?digest={small_digest}", small,
                    {"Content-Length": str(len(small)),
                     "Content-Type": "application/octet-stream"})
    assert pushed.status == 201, pushed.body

    # Larger than S3's minimum part: one part plus a tail, completed on the real server.
    large = pseudo_random(5 * MIB + 4096, 5)
    large_digest = sha256(large)
    started = invoke(app, "POST", "/v2/sec/blobs/uploads/")
    assert started.status == 202, started.body
    patched = invoke(app, "PATCH", started.headers["Location"], large,
                     {"Content-Length": str(len(large)),
                      "Content-Type": "application/octet-stream"})
    assert patched.status == 202, patched.body
    done = invoke(app, "PUT", f"{patched.headers['Location']}&digest={large_digest}")
    assert done.status == 201, done.body

    for digest, data in ((small_digest, small), (large_digest, large)):
        got = invoke(app, "GET", f"/v2/sec/blobs/{digest}")
        assert got.status == 307, got.body
        assert got.headers["Docker-Content-Digest"] == digest
        location = got.headers["Location"]
        assert location.startswith(f"{s3_on_real.endpoint}/{real_settings.bucket}/")
        assert query_value(location, "X-Amz-Expires") == str(real_settings.redirect_ttl)

        assert fetch(location) == Reply(200, data)
        ranged = fetch(location, headers={"Range": "bytes=1000-1999"})
        assert (ranged.status, ranged.body) == (206, data[1000:2000])
        tampered = fetch(flip_signature(location))
        assert tampered.status == 403, tampered
        assert error_code(tampered) == "SignatureDoesNotMatch"
        stretched = fetch(with_param(location, "X-Amz-Expires", "604800"))
        assert stretched.status == 403, stretched

    # The small blob's URL cannot be bent to the large blob's object.
    small_location = invoke(app, "GET", f"/v2/sec/blobs/{small_digest}").headers["Location"]
    large_location = invoke(app, "GET", f"/v2/sec/blobs/{large_digest}").headers["Location"]
    bent = fetch(with_path(small_location, urlsplit(large_location).path))
    assert bent.status == 403, bent


# -- presigned UploadPart (direct-to-S3 uploads) --------------------------------
def presign_part(store: BlobStore, key: str, upload_id: str, number: int, ttl: int) -> str:
    """An UploadPart URL exactly as the direct-to-S3 extension hands it out."""
    return store.presign_upload_part(key, upload_id, number, ttl)


def parts_of(store: BlobStore, key: str, upload_id: str) -> dict[int, tuple[str, int]]:
    """Part number → (ETag, size), as ListParts reports them."""
    return {p["PartNumber"]: (p["ETag"], p["Size"])
            for p in store.list_parts(key, upload_id)}


def md5_etag(data: bytes) -> str:
    return '"' + hashlib.md5(data).hexdigest() + '"'  # noqa: S324 - S3's ETag, not security


def test_presigned_upload_part_rejects_tampering(real_bucket: BlobStore) -> None:
    key, other_key = large_blob_key(uuid.uuid4().hex), large_blob_key(uuid.uuid4().hex)
    upload = real_bucket.start_multipart(key)
    other_upload = real_bucket.start_multipart(other_key)
    url = presign_part(real_bucket, key, upload, 1, 60)
    part = pseudo_random(64 * 1024, 6)

    written = fetch(url, method="PUT", data=part)
    assert written.status == 200, written
    assert parts_of(real_bucket, key, upload) == {1: (md5_etag(part), len(part))}

    intruder = pseudo_random(1000, 7)
    tampered: dict[str, str] = {
        "signature": flip_signature(url),
        "part number": with_param(url, "partNumber", "2"),
        "upload id": with_param(url, "uploadId", other_upload),
        "key": with_path(url, f"/{real_bucket.bucket}/{other_key}"),
        "key and upload id": with_param(with_path(url, f"/{real_bucket.bucket}/{other_key}"),
                                        "uploadId", other_upload),
        "longer expiry": with_param(url, "X-Amz-Expires", "604800"),
        "later date": with_param(url, "X-Amz-Date", shifted_date(url, 60)),
    }
    for what, bad in tampered.items():
        reply = fetch(bad, method="PUT", data=intruder)
        assert reply.status == 403, (what, reply)
        assert error_code(reply) == "SignatureDoesNotMatch", (what, reply)

    # The URL authorises UploadPart only: not aborting the upload, not a plain PUT.
    abort = fetch(url, method="DELETE")
    assert abort.status == 403, abort
    as_put_object = fetch(without_params(url, "uploadId", "partNumber"), method="PUT",
                          data=intruder)
    assert as_put_object.status == 403, as_put_object
    assert not real_bucket.exists(key)

    assert parts_of(real_bucket, key, upload) == {1: (md5_etag(part), len(part))}
    assert parts_of(real_bucket, other_key, other_upload) == {}

    # Within its TTL the URL may be replayed with other bytes (S3 semantics, the
    # ETag is not signed): completion must verify the digest, never trust parts.
    replayed = fetch(url, method="PUT", data=intruder)
    assert replayed.status == 200, replayed
    assert parts_of(real_bucket, key, upload) == {1: (md5_etag(intruder), len(intruder))}
    assert fetch(url, method="PUT", data=part).status == 200

    etag = parts_of(real_bucket, key, upload)[1][0]
    real_bucket.s3.complete_multipart_upload(
        Bucket=real_bucket.bucket, Key=key, UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    assert real_bucket.read(key) == part
    real_bucket.abort_multipart(other_key, other_upload)


def test_presigned_upload_part_expires(real_bucket: BlobStore) -> None:
    key = large_blob_key(uuid.uuid4().hex)
    upload = real_bucket.start_multipart(key)
    short = presign_part(real_bucket, key, upload, 1, 1)
    control = presign_part(real_bucket, key, upload, 2, 60)

    wait_until_expired(short)
    expired = fetch(short, method="PUT", data=b"late")
    assert expired.status == 403, expired
    assert error_code(expired) == "AccessDenied"
    assert parts_of(real_bucket, key, upload) == {}
    assert fetch(control, method="PUT", data=b"in time").status == 200
    assert parts_of(real_bucket, key, upload) == {2: (md5_etag(b"in time"), 7)}
    real_bucket.abort_multipart(key, upload)


def test_real_s3_copy_and_multipart_listing(real_bucket: BlobStore) -> None:
    """The other S3 calls the registry makes work on this server too, so a
    failure elsewhere in this file is about signatures, not missing features."""
    key = large_blob_key(uuid.uuid4().hex)
    upload = real_bucket.start_multipart(key)
    first, last = pseudo_random(5 * MIB, 8), pseudo_random(3000, 9)
    etags = [real_bucket.upload_part(key, upload, 1, first),
             real_bucket.upload_part(key, upload, 2, last)]
    assert [p["PartNumber"] for p in real_bucket.list_parts(key, upload)] == [1, 2]
    real_bucket.s3.complete_multipart_upload(
        Bucket=real_bucket.bucket, Key=key, UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e}
                                   for n, e in enumerate(etags, start=1)]})
    real_bucket.copy(key, key + ".copy")
    assert list(real_bucket.stream(key + ".copy", len(first) - 2, len(first) + 1)) \
        == [first[-2:] + last[:2]]
    assert real_bucket.read(key) == first + last

