"""Drives the keepfresh example MCP server with the official Python MCP client (`mcp` 2.x).

Subcommands (each prints one JSON object on stdout):

  load   N concurrent workers call a tool in a loop for D seconds, over Streamable HTTP (one
         client session per bearer token, the workers spread over them) or over stdio (one
         client per server process, all started at once, the workers spread over them);
  call   one call of one tool: its isError and structuredContent.

--log FILE writes the client's session log: the `mcp` and `httpx2` loggers at DEBUG for
`call`, at WARNING for `load` (a thousand concurrent calls would spend their time logging),
plus the driver's own lines (connection, protocol version, first outcome of each kind,
summary). Bearer tokens given on the command line are replaced by <redacted> in it.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import logging
import sys
import time

import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client


class Redact(logging.Filter):
    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        for secret in self.secrets:
            message = message.replace(secret, "<redacted>")
        record.msg, record.args = message, None
        return True


def setup_log(path: str | None, secrets: list[str], verbose: bool) -> logging.Logger:
    log = logging.getLogger("drive")
    if path is None:
        log.addHandler(logging.NullHandler())
        return log
    handler = logging.FileHandler(path, mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(Redact(secrets))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    for name in ("mcp", "httpx2"):
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.WARNING)
    log.setLevel(logging.DEBUG)
    return log


def clients(args: argparse.Namespace) -> list[tuple[Client, httpx2.AsyncClient | None]]:
    """One MCP client per bearer token (HTTP) or per server process (stdio)."""
    out = []
    if args.transport == "http":
        for token in args.token or [None]:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            http = httpx2.AsyncClient(
                headers=headers,
                timeout=httpx2.Timeout(60, read=300),
                limits=httpx2.Limits(max_connections=256, max_keepalive_connections=256),
            )
            out.append((Client(streamable_http_client(args.url, http_client=http), mode=args.mode), http))
    else:
        for _ in range(args.servers):
            params = StdioServerParameters(command=args.command[0], args=args.command[1:], env=dict(args.env))
            out.append((Client(params, mode=args.mode), None))
    return out


def outcome(result) -> str:
    if not result.is_error:
        return "ok"
    body = result.structured_content or {}
    return f"error:{body.get('error', 'unstructured')}"


async def load(args: argparse.Namespace, log: logging.Logger) -> dict:
    pairs = clients(args)
    counts: collections.Counter[str] = collections.Counter()
    samples: dict[str, object] = {}
    started = time.monotonic()

    async def worker(client: Client, deadline: float) -> None:
        while time.monotonic() < deadline:
            try:
                result = await client.call_tool(args.tool, {})
                kind = outcome(result)
                if kind != "ok" and kind not in samples:
                    samples[kind] = result.structured_content
            except Exception as e:  # the call failed at the protocol or transport level
                kind = f"exception:{type(e).__name__}"
                samples.setdefault(kind, str(e))
            if counts[kind] == 0:
                log.info("first %s outcome of %s", kind, args.tool)
            counts[kind] += 1

    async def session(client: Client, http: httpx2.AsyncClient | None, workers: int) -> str:
        async with client:
            log.info("connected: protocol %s", client.session.protocol_version)
            deadline = time.monotonic() + args.duration
            await asyncio.gather(*(worker(client, deadline) for _ in range(workers)))
            version = str(client.session.protocol_version)
        if http is not None:
            await http.aclose()
        return version

    share, extra = divmod(args.concurrency, len(pairs))
    versions = await asyncio.gather(
        *(session(c, h, share + (1 if i < extra else 0)) for i, (c, h) in enumerate(pairs))
    )
    elapsed = time.monotonic() - started
    calls = sum(counts.values())
    summary = {
        "tool": args.tool,
        "transport": args.transport,
        "mode": args.mode,
        "protocol_versions": sorted(set(versions)),
        "sessions": len(pairs),
        "concurrency": args.concurrency,
        "seconds": round(elapsed, 1),
        "calls": calls,
        "ok": counts["ok"],
        "outcomes": dict(counts),
        "samples": samples,
    }
    log.info("summary %s", json.dumps(summary))
    return summary


async def call(args: argparse.Namespace, log: logging.Logger) -> dict:
    (client, http), = clients(args)[:1]
    async with client:
        log.info("connected: protocol %s", client.session.protocol_version)
        result = await client.call_tool(args.tool, {})
        version = str(client.session.protocol_version)
    if http is not None:
        await http.aclose()
    answer = {
        "tool": args.tool,
        "protocol_version": version,
        "is_error": result.is_error,
        "structured": result.structured_content,
    }
    log.info("result %s", json.dumps(answer))
    return answer


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="%(prog)s {load,call} [options] [-- server command (stdio)]",
    )
    parser.add_argument("command_name", choices=["load", "call"])
    parser.add_argument("--transport", choices=["http", "stdio"], required=True)
    parser.add_argument("--mode", default="auto", help="'legacy', 'auto' or a protocol version such as 2026-07-28")
    parser.add_argument("--url", help="the server's Streamable HTTP endpoint")
    parser.add_argument("--token", action="append", help="a bearer token for the server (HTTP); repeat for more users")
    parser.add_argument("--servers", type=int, default=1, help="stdio: server processes started at once")
    parser.add_argument("--env", action="append", nargs=2, default=[], metavar=("NAME", "VALUE"), help="stdio: environment of the servers")
    parser.add_argument("--tool", default="read_resource")
    parser.add_argument("--concurrency", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--log")
    argv = sys.argv[1:]
    command = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = parser.parse_args(argv[: len(argv) - len(command) - (1 if command else 0)])
    args.command = command
    if args.transport == "http" and not args.url:
        parser.error("--url is required for http")
    if args.transport == "stdio" and not args.command:
        parser.error("the server command is required for stdio")
    log = setup_log(args.log, args.token or [], verbose=args.command_name == "call")
    run = load if args.command_name == "load" else call
    print(json.dumps(asyncio.run(run(args, log))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
