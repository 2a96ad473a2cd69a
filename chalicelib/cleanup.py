"""``python -m chalicelib.cleanup``: remove what abandoned uploads left behind.

DynamoDB's TTL deletes expired upload records and the bucket's lifecycle
rules abort their multipart uploads and expire their staging objects after
two days. This command does the same at once (for a bill-conscious operator,
a scheduled job, or a test): it aborts multipart uploads and deletes staging
objects whose upload session is gone or expired. Anything younger than
``--grace`` seconds is left alone, because a monolithic upload in flight
has staging but no session record.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field

from .config import Settings
from .storage.blobs import LARGE_PREFIX, BlobStore
from .storage.metadata import MetadataStore

STAGING_PREFIX = "uploads/"


@dataclass
class CleanupReport:
    aborted_multipart: list[str] = field(default_factory=list)
    deleted_objects: list[str] = field(default_factory=list)
    kept_live: int = 0


def cleanup(blobs: BlobStore, meta: MetadataStore, grace: float = 3600,
            now: float | None = None) -> CleanupReport:
    now = time.time() if now is None else now
    report = CleanupReport()
    live: dict[str, bool] = {}

    def is_live(upload_id: str) -> bool:
        if upload_id not in live:
            live[upload_id] = meta.get_upload(upload_id) is not None
        return live[upload_id]

    for upload in blobs.list_multipart(LARGE_PREFIX):
        upload_id = upload["Key"][len(LARGE_PREFIX):]
        if now - upload["Initiated"].timestamp() < grace or is_live(upload_id):
            report.kept_live += 1
            continue
        blobs.abort_multipart(upload["Key"], upload["UploadId"])
        report.aborted_multipart.append(upload["Key"])
    for obj in blobs.list_keys(STAGING_PREFIX):
        upload_id = obj["Key"][len(STAGING_PREFIX):].split("/", 1)[0]
        if now - obj["LastModified"].timestamp() < grace or is_live(upload_id):
            report.kept_live += 1
            continue
        blobs.delete(obj["Key"])
        report.deleted_objects.append(obj["Key"])
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chalicelib.cleanup", description=__doc__)
    parser.add_argument("--grace", type=float, default=3600,
                        help="leave staging younger than this many seconds (default 3600)")
    args = parser.parse_args(argv)
    settings = Settings.from_env(blob_redirects_default=False)
    report = cleanup(BlobStore(settings.bucket, settings.region),
                     MetadataStore(settings.table, settings.region), grace=args.grace)
    print(json.dumps(asdict(report), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
