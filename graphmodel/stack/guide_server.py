"""Small HTTP server for the NeurFlow Browser guide; Neo4j Browser itself is served by Neo4j.

Under ``/guide/`` it serves whatever guide is installed: the renderer registered in the entry-point
group ``neurflow.browser_guide`` (the project registers ``queries.browser:guide_asset``, which builds
the guide, style and favourites from the `.cypher` files for every request, so a new query shows up
without a restart). The stack names no guide itself: graphmodel does not import queries. It needs
no Java and no Maven build, so it also serves the guide for a Neo4j running elsewhere (Docker).

Browser fetches a guide or style only from hosts on the server's
``browser.remote_content_hostname_whitelist`` (the local stack's neo4j.conf adds 127.0.0.1); these
answers carry ``Access-Control-Allow-Origin: *`` so ``localhost`` works as well.
"""

from __future__ import annotations

import argparse
import traceback
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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


class GuideHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        if path in ("/", "/guide") or path.startswith(GUIDE_PREFIX):
            name = path[len(GUIDE_PREFIX) :] if path.startswith(GUIDE_PREFIX) else ""
            self._guide(name, {k: v[-1] for k, v in parse_qs(query).items()})
            return
        self.send_error(404, "this server serves only the NeurFlow guide, under /guide/")

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
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7475)
    args = parser.parse_args()
    server = ThreadingHTTPServer((args.host, args.port), GuideHandler)
    print(f"neurflow-guide: serving the guide on http://{args.host}:{args.port}{GUIDE_PREFIX}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
