"""A real HTTP server on 127.0.0.1 for the data-preparation tests: static files with `Range`, a
Hub-compatible endpoint (resolve with the LFS redirect and headers, tree listing), failure switches,
and a log of every request with the bytes it actually sent."""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class LocalServer:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.hub: dict[str, dict[str, bytes]] = {}
        self.status: dict[str, int] = {}
        self.drop_after: dict[str, int] = {}
        """path -> serve this many bytes once, then close the connection."""
        self.stall_after: dict[str, int] = {}
        """path -> serve this many bytes, then wait for `release` (a client killed meanwhile)."""
        self.release = threading.Event()
        self.fail_once: dict[str, int] = {}
        """path -> answer this status once, then serve normally."""
        self.head_size: dict[str, int] = {}
        """path -> Content-Length a HEAD reports (to play a file larger than the disk)."""
        self.log: list[dict] = []
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.cdn_url = f"http://localhost:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def add_hub_file(self, repo_id: str, filename: str, data: bytes) -> str:
        self.hub.setdefault(repo_id, {})[filename] = data
        sha = hashlib.sha256(data).hexdigest()
        self.files[f"/lfs/{sha}"] = data
        return sha

    def requests(self, path_part: str = "", method: str | None = None) -> list[dict]:
        with self._lock:
            return [e for e in self.log if path_part in e["path"] and (method is None or e["method"] == method)]

    def bytes_sent(self, path_part: str) -> int:
        return sum(e["sent"] for e in self.requests(path_part, "GET"))

    def _record(self, entry: dict) -> None:
        with self._lock:
            self.log.append(entry)


def _handler(server: LocalServer):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # quiet
            pass

        def do_HEAD(self) -> None:
            self._serve(head=True)

        def do_GET(self) -> None:
            self._serve(head=False)

        def _serve(self, head: bool) -> None:
            path = unquote(urlparse(self.path).path)
            entry = {"method": self.command, "path": path, "range": self.headers.get("Range"), "status": 200,
                     "sent": 0}
            try:
                self._route(path, head, entry)
            except (BrokenPipeError, ConnectionResetError):
                pass
            finally:
                server._record(entry)

        def _route(self, path: str, head: bool, entry: dict) -> None:
            if path in server.status:
                return self._plain(server.status[path], b"nope", entry)
            if path in server.fail_once:
                return self._plain(server.fail_once.pop(path), b"try again", entry)
            resolve = re.match(r"^/datasets/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path)
            tree = re.match(r"^/api/datasets/([^/]+/[^/]+)/tree/([^/]+)(?:/(.*))?$", path)
            info = re.match(r"^/api/datasets/([^/]+/[^/]+)(?:/revision/([^/]+))?$", path)
            if info and info.group(1) in server.hub:
                body = {"id": info.group(1), "sha": COMMIT, "private": False, "disabled": False, "gated": False,
                        "siblings": [{"rfilename": name} for name in sorted(server.hub[info.group(1)])]}
                return self._plain(200, json.dumps(body).encode(), entry, {"Content-Type": "application/json"})
            if resolve:
                repo, _, filename = resolve.groups()
                data = server.hub.get(repo, {}).get(filename)
                if data is None:
                    return self._plain(404, b"Entry not found", entry, {"X-Error-Code": "EntryNotFound",
                                                                        "X-Repo-Commit": COMMIT})
                sha = hashlib.sha256(data).hexdigest()
                entry["status"] = 302
                self.send_response(302)
                self.send_header("Location", f"{server.cdn_url}/lfs/{sha}")  # another host, as the Hub's CDN
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("X-Linked-Etag", f'"{sha}"')
                self.send_header("ETag", f'"{sha}"')
                self.send_header("X-Linked-Size", str(len(data)))
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if tree:
                repo, under = tree.group(1), (tree.group(3) or "").strip("/")
                if repo not in server.hub:
                    return self._plain(404, b"Repository not found", entry, {"X-Error-Code": "RepoNotFound"})
                recursive = "recursive=true" in (urlparse(self.path).query or "").lower()
                listing, folders = [], set()
                for name, data in sorted(server.hub[repo].items()):
                    if under and not name.startswith(under + "/"):
                        continue
                    rest = name[len(under) + 1:] if under else name
                    if "/" in rest and not recursive:  # a folder, listed once, as the Hub does
                        folder = (under + "/" if under else "") + rest.split("/")[0]
                        if folder not in folders:
                            folders.add(folder)
                            listing.append({"type": "directory", "path": folder, "oid": "0" * 40, "size": 0})
                        continue
                    listing.append({"type": "file", "path": name, "size": len(data),
                                    "oid": hashlib.sha1(data).hexdigest()})
                if under and not listing:
                    return self._plain(404, b"Entry not found", entry, {"X-Error-Code": "EntryNotFound"})
                return self._plain(200, json.dumps(listing).encode(), entry, {"Content-Type": "application/json"})
            if path not in server.files:
                return self._plain(404, b"not found", entry)
            self._file(path, server.files[path], head, entry)

        def _plain(self, status: int, body: bytes, entry: dict, headers: dict | None = None) -> None:
            entry["status"] = status
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
                entry["sent"] = len(body)

        def _file(self, path: str, data: bytes, head: bool, entry: dict) -> None:
            etag = f'"{hashlib.sha256(data).hexdigest()[:16]}"'
            start, end = 0, len(data) - 1
            ranged = re.match(r"bytes=(\d+)-(\d*)$", self.headers.get("Range") or "")
            if_range = self.headers.get("If-Range")
            if ranged and (if_range is None or if_range == etag):
                start = int(ranged.group(1))
                end = int(ranged.group(2)) if ranged.group(2) else end
                if start >= len(data):
                    return self._plain(416, b"", entry, {"Content-Range": f"bytes */{len(data)}"})
                entry["status"] = 206
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
            else:
                self.send_response(200)
            length = server.head_size.get(path, end - start + 1) if head else end - start + 1
            self.send_header("Content-Length", str(length))
            self.send_header("ETag", etag)
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            if head:
                return
            body = data[start:end + 1]
            drop = server.drop_after.pop(path, None)
            stall = server.stall_after.get(path)
            cut = drop if drop is not None else stall
            if cut is not None and cut < len(body):
                self.wfile.write(body[:cut])
                self.wfile.flush()
                entry["sent"] = cut
                if drop is not None:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                server.release.wait(60)
                if _peer_closed(self.connection):  # the client died meanwhile: nothing more reaches it
                    return
                body = body[cut:]
            self.wfile.write(body)
            entry["sent"] += len(body)

    return Handler


def _peer_closed(conn: socket.socket) -> bool:
    conn.setblocking(False)
    try:
        return conn.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        conn.setblocking(True)
