"""Static HTTP server for Neo4j Browser, standing in for the HTTP side of a Neo4j server.

Serves the unpacked ``org.neo4j.client:neo4j-browser`` files at ``/`` (and ``/browser/``), and
answers ``GET /`` with ``Accept: application/json`` the way Neo4j's discovery endpoint does, so
Browser can find the Bolt address of the local Neo4j (Browser 5.24 asks for it, but in headless
Chromium its connect form stayed empty; ``/?dbms=bolt://...`` fills it). The stack runs this file by
path in its own process.

Under ``/guide/`` it serves whatever guide is installed: the renderer registered in the entry-point
group ``neurflow.browser_guide`` (the project registers ``queries.browser:guide_asset``, which builds
the guide, style and favourites from the `.cypher` files for every request, so a new query shows up
without a restart). The stack names no guide itself: graphmodel does not import queries.

Browser fetches a guide or style only from hosts on the server's
``browser.remote_content_hostname_whitelist`` (the local Neo4j launcher adds 127.0.0.1); these
answers carry ``Access-Control-Allow-Origin: *`` so ``localhost`` works as well.
"""

from __future__ import annotations

import argparse
import json
import os
import traceback
from collections.abc import Callable
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata
from urllib.parse import parse_qs

GUIDE_PREFIX = "/guide/"
GUIDE_ENTRY_POINTS = "neurflow.browser_guide"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
# `renderer(name, params, base) -> (status, content type, body)`: the asset `name` under /guide/,
# with the request's query parameters and the URL prefix the client reached the guide by.
GuideRenderer = Callable[[str, dict[str, str], str], tuple[int, str, bytes]]


def guide_renderer() -> GuideRenderer | None:
    """The installed guide renderer (entry-point group ``neurflow.browser_guide``), or None."""
    found = sorted(metadata.entry_points(group=GUIDE_ENTRY_POINTS), key=lambda ep: ep.name)
    return found[0].load() if found else None


class BrowserHandler(SimpleHTTPRequestHandler):
    discovery: bytes = b"{}"

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        if path == "/" and "application/json" in self.headers.get("Accept", ""):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(self.discovery)))
            self.end_headers()
            self.wfile.write(self.discovery)
            return
        if path == "/guide" or path.startswith(GUIDE_PREFIX):
            self._guide(path[len(GUIDE_PREFIX) :], {k: v[-1] for k, v in parse_qs(query).items()})
            return
        if path == "/browser":
            self.send_response(301)
            self.send_header("Location", "/browser/")
            self.end_headers()
            return
        if path.startswith("/browser/"):
            self.path = self.path[len("/browser") :]
        super().do_GET()

    def do_OPTIONS(self) -> None:
        self.send_response(204)
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Access-Control-Allow-Methods", "GET, OPTIONS")
        self.send_header("Access-Control-Allow-Headers", "*")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _origin(self) -> str:
        """``http://host:port`` as the client reached this server (loopback names only)."""
        host = self.headers.get("Host", "")
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if name in LOOPBACK_NAMES:
            return f"http://{host}"
        address, port = self.server.server_address[:2]
        return f"http://{address}:{port}"

    def _guide(self, name: str, examples: dict[str, str]) -> None:
        """A NeurFlow asset; the guide's example parameter values can be set in the query string
        (``neurflow.html?model_id=...&class_name=bee``)."""
        if name in ("", "index.html"):
            self.send_response(302)
            self.send_header("Location", GUIDE_PREFIX + "neurflow.html")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        try:
            render = guide_renderer()
            if render is None:
                self.send_error(404, f"no guide is installed (entry-point group {GUIDE_ENTRY_POINTS})")
                return
            code, kind, body = render(name, examples, self._origin() + GUIDE_PREFIX)
            if code == 404:
                self.send_error(404, f"no such NeurFlow asset: {name}")
                return
        except Exception as exc:  # a broken .cypher header: say so instead of a blank guide
            traceback.print_exc()
            body, kind = f"NeurFlow guide failed: {exc}\n".encode(), "text/plain; charset=utf-8"
            self.send_response(500)
        else:
            self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Access-Control-Allow-Origin", "*")
        self.end_headers()
        self.wfile.write(body)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if str(code).startswith(("4", "5")):
            super().log_request(code, size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", required=True, help="directory holding Browser's index.html")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7474)
    parser.add_argument("--bolt", required=True, help="Bolt URI that Browser should connect to")
    parser.add_argument("--neo4j-version", default="5.26")
    args = parser.parse_args()
    if not os.path.isfile(os.path.join(args.root, "index.html")):
        parser.error(f"--root {args.root} has no index.html")
    BrowserHandler.discovery = json.dumps(
        {"bolt_direct": args.bolt, "neo4j_version": args.neo4j_version, "neo4j_edition": "community"}
    ).encode()
    handler = partial(BrowserHandler, directory=args.root)
    server = ThreadingHTTPServer((args.host, args.port), handler)
    print(f"neurflow-browser: serving {args.root} on http://{args.host}:{args.port}/", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
