"""`curate backfill`: launch a partition backfill on a running Dagster webserver, and wait for it.

For CI (e.g. after the embedding model's version changed): re-materialise a pool's per-drop assets
for all drops, a comma list of drops, or a range ``a..b`` of drops (in registration order).

    curate backfill --url http://dagster:3000 --pool demo --partitions all
    curate backfill --url ... --pool demo --partitions 2024-06-01,2024-06-02 --add-missing
    curate backfill --url ... --pool demo --partitions 2024-06-01..2024-06-30 --assets embeddings

Over GraphQL: the pool's assets and drop keys from ``assetNodes``; ``addDynamicPartition`` for
listed drops not registered yet (with --add-missing); ``launchPartitionBackfill``; then
``partitionBackfillOrError`` until the backfill ends. Exit status: 0 when every targeted partition
materialised, 1 when the backfill failed, was canceled, or did not finish in --timeout, 2 for
invalid options or a backfill that could not be launched.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from curation import naming
from curation.commands._options import validate
from curation.landing import drop_id_problem

DEFAULT_URL = "http://127.0.0.1:3000"
ASSET_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
DONE_OK = {"COMPLETED", "COMPLETED_SUCCESS"}
DONE_BAD = {"FAILED", "CANCELED", "COMPLETED_FAILED"}


class BackfillError(RuntimeError):
    """The backfill failed, was canceled, timed out, or the server said no."""


class BackfillOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str
    pool: str
    partitions: str
    assets: list[str] = Field(min_length=1)
    add_missing: bool = False
    timeout: float = Field(gt=0)
    poll_interval: float = Field(gt=0)
    title: str | None = None
    tag: dict[str, str] = Field(default_factory=dict)
    run_config: dict = Field(default_factory=dict)
    in_process: bool = False
    dry_run: bool = False

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https?://[^\s/]+", value):
            raise ValueError("must be an http(s):// URL of the Dagster webserver")
        return value.rstrip("/")

    @field_validator("pool")
    @classmethod
    def _pool(cls, value: str) -> str:
        if not naming.NAME_PATTERN.match(value):
            raise ValueError("must be a pool name (lower-case letters, digits, _)")
        return value

    @field_validator("assets")
    @classmethod
    def _assets(cls, value: list[str]) -> list[str]:
        for name in value:
            if not ASSET_PATTERN.match(name):
                raise ValueError(f"{name!r} is not an asset name of a pool (e.g. raw, embeddings)")
        return value

    @field_validator("partitions")
    @classmethod
    def _partitions(cls, value: str) -> str:
        spec = parse_partitions(value)  # raises ValueError naming the bad part
        return value.strip() if spec.kind != "all" else "all"


class PartitionSpec(BaseModel):
    kind: Literal["all", "list", "range"]
    keys: list[str] = []  # list: the keys; range: [first, last]


def parse_partitions(text: str) -> PartitionSpec:
    """'all' | 'a,b,c' | 'a..b' -> PartitionSpec, or ValueError naming the bad drop id."""
    text = str(text).strip()
    if text.lower() == "all":
        return PartitionSpec(kind="all")
    if not text:
        raise ValueError("is empty: give all, a comma list of drop ids, or a range a..b")
    if ".." in text and "," not in text:
        first, sep, last = text.partition("..")
        if ".." in last:
            raise ValueError(f"range {text!r} must be exactly first..last")
        for end in (first, last):
            problem = drop_id_problem(end)
            if problem is not None:
                raise ValueError(f"range end {end!r} {problem}")
        return PartitionSpec(kind="range", keys=[first, last])
    keys = [k.strip() for k in text.split(",")]
    for key in keys:
        problem = drop_id_problem(key)
        if problem is not None:
            raise ValueError(f"drop id {key!r} {problem}")
    return PartitionSpec(kind="list", keys=list(dict.fromkeys(keys)))


# ---- GraphQL ------------------------------------------------------------------------------------
ASSET_NODES_QUERY = """
query PoolAssets {
  assetNodes {
    assetKey { path }
    partitionKeys
    partitionDefinition { type dimensionTypes { dynamicPartitionsDefinitionName } }
    repository { name location { name } }
  }
}
"""

ADD_PARTITION_MUTATION = """
mutation AddDrop($repo: RepositorySelector!, $def: String!, $key: String!) {
  addDynamicPartition(repositorySelector: $repo, partitionsDefName: $def, partitionKey: $key) {
    __typename
    ... on AddDynamicPartitionSuccess { partitionKey }
    ... on Error { message }
  }
}
"""

LAUNCH_MUTATION = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on Error { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""

STATUS_QUERY = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill {
      id
      status
      numPartitions
      error { message }
      assetBackfillData {
        assetBackfillStatuses {
          ... on AssetPartitionsStatusCounts {
            assetKey { path }
            numPartitionsTargeted
            numPartitionsInProgress
            numPartitionsMaterialized
            numPartitionsFailed
          }
        }
      }
    }
    ... on Error { message }
  }
}
"""


class GraphQLClient:
    def __init__(self, url: str, timeout: float = 30.0):
        self.endpoint = url.rstrip("/") + "/graphql"
        self.timeout = timeout

    def __call__(self, query: str, variables: dict | None = None) -> dict:
        import urllib.error
        import urllib.request

        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(
            self.endpoint, data=body, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            raise BackfillError(f"{self.endpoint}: HTTP {exc.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise BackfillError(f"cannot reach {self.endpoint}: {exc}") from None
        if payload.get("errors"):
            messages = "; ".join(e.get("message", "?") for e in payload["errors"])
            raise BackfillError(f"GraphQL error from {self.endpoint}: {messages}")
        return payload["data"]


def _result_error(result: dict, what: str) -> str:
    message = result.get("message") or ""
    if result.get("errors"):
        message = "; ".join(e["message"] for e in result["errors"])
    return f"{what}: {result['__typename']}: {message}".rstrip(": ")


# ---- the command --------------------------------------------------------------------------------
class Target(BaseModel):
    asset_keys: list[list[str]]
    partitions_def: str
    repository: dict[str, str]  # RepositorySelector
    existing: list[str]  # registered drop keys, in registration order


def resolve_target(gql: GraphQLClient, opts: BackfillOptions) -> Target:
    nodes = gql(ASSET_NODES_QUERY)["assetNodes"]
    pools = sorted({n["assetKey"]["path"][0] for n in nodes if len(n["assetKey"]["path"]) > 1})
    by_name = {
        n["assetKey"]["path"][1]: n
        for n in nodes
        if len(n["assetKey"]["path"]) == 2 and n["assetKey"]["path"][0] == opts.pool
    }
    if not by_name:
        raise ValueError(f"invalid options: --pool={opts.pool!r}: unknown pool (served: {pools})")
    expected_def = naming.drops_partitions(opts.pool)
    for name in opts.assets:
        node = by_name.get(name)
        if node is None:
            raise ValueError(
                f"invalid options: --assets: pool {opts.pool!r} has no asset {name!r} "
                f"(assets: {sorted(by_name)})"
            )
        dims = (node.get("partitionDefinition") or {}).get("dimensionTypes") or []
        if [d.get("dynamicPartitionsDefinitionName") for d in dims] != [expected_def]:
            raise ValueError(
                f"invalid options: --assets: {opts.pool}/{name} is not partitioned by drop "
                f"({expected_def}); backfill only per-drop assets, downstream ones follow"
            )
    first = by_name[opts.assets[0]]
    return Target(
        asset_keys=[naming.asset_path(opts.pool, name) for name in opts.assets],
        partitions_def=expected_def,
        repository={
            "repositoryName": first["repository"]["name"],
            "repositoryLocationName": first["repository"]["location"]["name"],
        },
        existing=list(first["partitionKeys"]),
    )


def select_partitions(spec: PartitionSpec, existing: list[str]) -> tuple[list[str], list[str]]:
    """(keys to backfill in order, keys among them not registered yet)."""
    if spec.kind == "all":
        if not existing:
            raise ValueError("invalid options: --partitions=all: the pool has no drops registered")
        return list(existing), []
    if spec.kind == "range":
        first, last = spec.keys
        for end in (first, last):
            if end not in existing:
                raise ValueError(
                    f"invalid options: --partitions: range end {end!r} is not a registered drop"
                )
        i, j = existing.index(first), existing.index(last)
        if i > j:
            raise ValueError(
                f"invalid options: --partitions: {first!r} was registered after {last!r}; "
                f"write the range as {last}..{first}"
            )
        return existing[i : j + 1], []
    known = set(existing)
    return list(spec.keys), [k for k in spec.keys if k not in known]


def _progress(backfill: dict) -> tuple[str, int, int, int, int]:
    """(line, targeted, materialized, failed, in progress) summed over the assets."""
    counts = [
        s
        for s in ((backfill.get("assetBackfillData") or {}).get("assetBackfillStatuses") or [])
        if "numPartitionsTargeted" in s
    ]
    targeted = sum(s["numPartitionsTargeted"] for s in counts)
    done = sum(s["numPartitionsMaterialized"] for s in counts)
    failed = sum(s["numPartitionsFailed"] for s in counts)
    running = sum(s["numPartitionsInProgress"] for s in counts)
    line = (
        f"backfill {backfill['id']}: {backfill['status']}, asset partitions "
        f"{done}/{targeted} materialized, {running} in progress, {failed} failed"
    )
    return line, targeted, done, failed, running


def wait_for_backfill(
    gql: GraphQLClient, backfill_id: str, timeout: float, poll_interval: float, out=None
) -> dict:
    """Poll until the backfill ends; return the last PartitionBackfill, or raise BackfillError."""
    out = out or sys.stdout
    deadline = time.monotonic() + timeout
    last_line = None
    while True:
        result = gql(STATUS_QUERY, {"id": backfill_id})["partitionBackfillOrError"]
        if result["__typename"] != "PartitionBackfill":
            raise BackfillError(_result_error(result, f"backfill {backfill_id}"))
        line, targeted, done, failed, _ = _progress(result)
        if line != last_line:
            print(line, file=out, flush=True)
            last_line = line
        status = result["status"]
        if status in DONE_BAD:
            error = (result.get("error") or {}).get("message", "").strip()
            raise BackfillError(
                f"backfill {backfill_id} ended {status}: {failed} asset partition(s) failed"
                + (f"; {error}" if error else "")
            )
        if status in DONE_OK:
            if failed or done < targeted:
                raise BackfillError(
                    f"backfill {backfill_id} ended {status} with {failed} failed and "
                    f"{targeted - done - failed} unmaterialized asset partition(s)"
                )
            return result
        if time.monotonic() >= deadline:
            raise BackfillError(
                f"backfill {backfill_id} still {status} after {timeout:.0f} s (timeout); "
                "it keeps running on the server"
            )
        time.sleep(poll_interval)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "backfill",
        help="launch a partition backfill of a pool on a Dagster webserver and wait for it",
        description="Re-materialise a pool's per-drop assets (default raw and embeddings; "
        "downstream assets follow by their automation conditions) for some drops, through the "
        "webserver's GraphQL API, and wait. Exit 0 on success, 1 if the backfill fails, is "
        "canceled or times out, 2 on invalid options.",
    )
    p.add_argument(
        "--url",
        default=os.environ.get("DAGSTER_WEBSERVER_URL", DEFAULT_URL),
        help="Dagster webserver URL (default $DAGSTER_WEBSERVER_URL or %(default)s)",
    )
    p.add_argument("--pool", required=True, help="pool name (the asset key prefix)")
    p.add_argument(
        "--partitions",
        required=True,
        help="all | comma list of drop ids | first..last (registration order, inclusive)",
    )
    p.add_argument(
        "--assets",
        default="raw,embeddings",
        help="comma list of the pool's per-drop assets to backfill (default %(default)s)",
    )
    p.add_argument(
        "--add-missing",
        action="store_true",
        help="register listed drops that are not partitions yet (addDynamicPartition)",
    )
    p.add_argument("--timeout", default=3600, help="seconds to wait (default %(default)s)")
    p.add_argument("--poll-interval", default=5, help="seconds between polls (default %(default)s)")
    p.add_argument("--title", default=None, help="backfill title shown in the UI")
    p.add_argument(
        "--tag", action="append", default=[], metavar="KEY=VALUE", help="run tag (repeatable)"
    )
    p.add_argument("--run-config", default=None, help="run config of every backfill run, as JSON")
    p.add_argument(
        "--in-process",
        action="store_true",
        help="ask the multiprocess executor to run each run's steps in its process (only for a "
        "code location on $CURATION_EXECUTOR=multiprocess; the default executor is in-process)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the plan, launch nothing")
    p.set_defaults(func=run)


def _parse_tags(items: list[str]) -> dict[str, str] | list[str]:
    tags = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            return items  # left to pydantic: not a dict, rejected naming --tag
        tags[key.strip()] = value
    return tags


def _parse_json(text: str | None) -> object:
    if text is None:
        return {}
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # left to pydantic: rejected naming --run-config


def run(args: argparse.Namespace) -> int:
    opts = validate(
        BackfillOptions,
        url=args.url,
        pool=args.pool,
        partitions=args.partitions,
        assets=[a.strip() for a in str(args.assets).split(",") if a.strip()],
        add_missing=args.add_missing,
        timeout=args.timeout,
        poll_interval=args.poll_interval,
        title=args.title,
        tag=_parse_tags(args.tag),
        run_config=_parse_json(args.run_config),
        in_process=args.in_process,
        dry_run=args.dry_run,
    )
    gql = GraphQLClient(opts.url)
    try:
        target = resolve_target(gql, opts)
        keys, missing = select_partitions(parse_partitions(opts.partitions), target.existing)
        if missing and not opts.add_missing:
            raise ValueError(
                f"invalid options: --partitions: drop(s) {missing} are not registered in "
                f"{target.partitions_def}; pass --add-missing to register them"
            )
        assets = ", ".join("/".join(k) for k in target.asset_keys)
        print(f"backfill {assets} for {len(keys)} drop(s): {', '.join(keys)}", flush=True)
        if opts.dry_run:
            print(f"dry run: would register {missing} and launch the backfill", flush=True)
            return 0
        for key in missing:
            result = gql(
                ADD_PARTITION_MUTATION,
                {"repo": target.repository, "def": target.partitions_def, "key": key},
            )["addDynamicPartition"]
            if result["__typename"] == "DuplicateDynamicPartitionError":
                continue  # registered meanwhile (by the drop sensor): fine
            if result["__typename"] != "AddDynamicPartitionSuccess":
                raise BackfillError(_result_error(result, f"adding drop {key!r}"))
            print(f"registered drop {key!r} in {target.partitions_def}", flush=True)
        params = {
            "assetSelection": [{"path": k} for k in target.asset_keys],
            "partitionNames": keys,
            "title": opts.title or f"curate backfill {opts.pool} ({len(keys)} drops)",
            "tags": [
                {"key": k, "value": v} for k, v in {"curation/pool": opts.pool, **opts.tag}.items()
            ],
        }
        run_config = dict(opts.run_config)
        if opts.in_process:
            run_config["execution"] = {"config": {"in_process": {}}}
        if run_config:
            params["runConfigData"] = run_config
        result = gql(LAUNCH_MUTATION, {"params": params})["launchPartitionBackfill"]
        if result["__typename"] != "LaunchBackfillSuccess":
            print(f"curate backfill: {_result_error(result, 'launch refused')}", file=sys.stderr)
            return 2
        backfill_id = result["backfillId"]
        print(f"launched backfill {backfill_id} ({opts.url}/overview/backfills/{backfill_id})")
        wait_for_backfill(gql, backfill_id, opts.timeout, opts.poll_interval)
    except BackfillError as exc:
        print(f"curate backfill: {exc}", file=sys.stderr)
        return 1
    print(f"backfill {backfill_id} succeeded", flush=True)
    return 0
