"""Where datasets registered by reference may be read from, and their shards there.

A tenant names an S3 prefix; the service lists it and reads every object under it, and later
its workers do. So the service reads only what the operator allows: `s3://` prefixes within
`TUNERY_DATASET_SOURCES`, through the operator's S3 server (`TUNERY_S3_ENDPOINT_URL`, AWS
when unset) with the service's own credentials. A tenant names neither a host nor a scheme of
another kind: nothing it sends can make the service request an address of its choosing (the
concern `app.services.outbound_addresses` answers for webhooks).
"""

from pathlib import PurePosixPath

from app.config import get_settings
from app.problems import InvalidInput
from trainer.readers import EXTENSIONS
from trainer.spec import SpecIssue
from trainer.streaming import STREAM_FORMATS, Shard, s3_filesystem


def _bad(message: str) -> InvalidInput:
    return InvalidInput([SpecIssue("uri", message)])


def allowed_prefix(uri: str) -> str:
    """`uri` as a prefix (ending in `/`), if it is an S3 prefix within an allowed source."""
    if not uri.startswith("s3://"):
        raise _bad("give an S3 prefix: s3://bucket/prefix/")
    path = uri.removeprefix("s3://")
    parts = path.rstrip("/").split("/")
    if not parts[0] or any(part in ("", ".", "..") for part in parts):
        raise _bad("not a plain S3 prefix: no empty, '.' or '..' parts")
    prefix = "s3://" + "/".join(parts) + "/"
    sources = [s if s.endswith("/") else s + "/" for s in get_settings().dataset_sources]
    if not any(prefix.startswith(source) for source in sources):
        shown = ", ".join(sources) if sources else "none: the operator allows no source"
        raise _bad(f"{uri} is not within the sources datasets may be read from ({shown})")
    return prefix


def list_shards(prefix: str) -> list[Shard]:
    """Every `.jsonl` or `.parquet` object under the prefix, by key, with its size and ETag;
    other objects (`_SUCCESS`, a README) are not shards. One format, and at most
    `TUNERY_MAX_DATASET_SHARDS` of them."""
    fs = s3_filesystem(get_settings().s3_endpoint_url)
    try:
        found = fs.find(prefix.removeprefix("s3://"), detail=True)
    except OSError as error:  # no such bucket, access denied, the server unreachable
        raise _bad(f"cannot list {prefix}: {error}") from None
    shards = []
    for key, info in sorted(found.items()):
        fmt = EXTENSIONS.get(PurePosixPath(key).suffix.lower())
        if fmt in STREAM_FORMATS and info.get("type") != "directory":
            url = f"s3://{key}"
            shards.append(Shard(url=url, format=fmt, size_bytes=info["size"], etag=info["ETag"]))
    if not shards:
        raise _bad(f"no .jsonl or .parquet objects under {prefix}")
    formats = sorted({shard.format for shard in shards})
    if len(formats) > 1:
        raise _bad(f"the shards under {prefix} are of one format: found {' and '.join(formats)}")
    limit = get_settings().max_dataset_shards
    if len(shards) > limit:
        raise _bad(f"{len(shards)} shards under {prefix}; at most {limit} are allowed")
    return shards
