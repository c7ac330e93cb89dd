"""``python -m search serve IDX``: a local web page over a search index.

The page (``search/static/``: HTML, vanilla JS, CSS; no build step) calls a small JSON API:

* ``GET /api/search?q=TEXT&top=K&per_video=N[&exact=1][&timeline=1]`` -> a JSON list of the
  same objects the CLI's ``query --json`` prints (:meth:`SearchIndex.query`);
* ``GET /api/similar?window_id=W&...`` -> "more like this": the same, queried with a stored
  window's own embedding (:meth:`SearchIndex.query_by_window`);
* ``GET /api/status`` -> :meth:`SearchIndex.status`;
* ``GET /video/{video_id}`` -> the video file, with HTTP Range requests (206) so the player
  can seek;
* ``GET /poster/{video_id}?t=SECONDS`` -> a JPEG of the frame at ``t``, decoded with the
  project's video reader and kept in a bounded in-memory cache.

Safety: it binds 127.0.0.1 unless told otherwise; a file is served only when the index
records it (looked up by video id through :meth:`SearchIndex.video_file`; no path taken from
the URL is ever opened, and ids that look like paths are refused); nothing is written; a
malformed request gets a 400 with a message, an unexpected failure a 500 without traceback.
"""

from __future__ import annotations

import argparse
import io
import logging
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().with_name("static")
MAX_QUERY_CHARS = 1000
MAX_TOP = 200
MAX_PER_VIDEO = 50
POSTER_WIDTH = 320
POSTER_CACHE_ENTRIES = 512
# A video id is opaque text from the index; anything that looks like a path is refused.
_PATHLIKE_ID = re.compile(r"(^[/\\~])|(^[A-Za-z]:)|(\.\.)|[\x00-\x1f]")


class BadRequest(ValueError):
    """A request the server refuses with 400; the message says what is wrong."""


# ----------------------------------------------------------------------------- parameters


def _param(params: Mapping[str, str], name: str) -> str | None:
    value = params.get(name)
    return None if value is None or value.strip() == "" else value.strip()


def int_param(params: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = _param(params, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an integer, got {raw[:40]!r}") from None
    if not low <= value <= high:
        raise BadRequest(f"{name} must be between {low} and {high}, got {value}")
    return value


def float_param(params: Mapping[str, str], name: str, low: float, high: float) -> float:
    raw = _param(params, name)
    if raw is None:
        raise BadRequest(f"missing parameter {name}")
    try:
        value = float(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a number, got {raw[:40]!r}") from None
    if not math.isfinite(value) or not low <= value <= high:
        raise BadRequest(f"{name} must be between {low:g} and {high:g}, got {raw[:40]}")
    return value


def bool_param(params: Mapping[str, str], name: str) -> bool:
    raw = (_param(params, name) or "0").lower()
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise BadRequest(f"{name} must be 0 or 1, got {raw[:40]!r}")


def query_text(params: Mapping[str, str]) -> str:
    text = (params.get("q") or "").strip()
    if not text:
        raise BadRequest("empty query: give some words in q")
    if len(text) > MAX_QUERY_CHARS:
        raise BadRequest(f"query too long: {len(text)} characters, at most {MAX_QUERY_CHARS}")
    return text


def check_video_id(video_id: str) -> str:
    """Refuse ids shaped like paths (``../``, absolute, drive letters) before any lookup."""
    if not video_id or len(video_id) > 512 or _PATHLIKE_ID.search(video_id):
        raise BadRequest(f"not a video id: {video_id[:80]!r}")
    return video_id


# ----------------------------------------------------------------------------- posters


def render_poster(path: Path, t: float, width: int = POSTER_WIDTH) -> bytes:
    """JPEG bytes of the frame nearest ``t`` seconds, scaled to ``width`` pixels wide."""
    from PIL import Image

    from dataloaders.video_reader import FrameSampling, read_frames_uint8

    # One frame: the centre of a short window around t (fixed_frames picks the middle frame).
    sampling = FrameSampling(max_frames=1, fixed_frames=True)
    frames, _ = read_frames_uint8(path, start=max(t - 0.1, 0.0), end=t + 0.1, sampling=sampling)
    image = Image.fromarray(frames[0].numpy())
    height = max(1, round(image.height * width / image.width))
    image = image.resize((width, height), Image.Resampling.BICUBIC)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=85)
    return out.getvalue()


class PosterCache:
    """Least-recently-used JPEG bytes keyed by (video id, time in centiseconds)."""

    def __init__(self, render: Callable[[Path, float], bytes], entries: int = POSTER_CACHE_ENTRIES):
        self._render = render
        self._entries = entries
        self._items: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, video_id: str, path: Path, t: float) -> bytes:
        key = (video_id, round(t * 100))
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        data = self._render(path, key[1] / 100)
        with self._lock:
            self._items[key] = data
            while len(self._items) > self._entries:
                self._items.popitem(last=False)
        return data


# ----------------------------------------------------------------------------- app


class SearchService:
    """What the routes need from an index, one query at a time (the model is not shared)."""

    def __init__(self, index, render: Callable[[Path, float], bytes] = render_poster):
        self.index = index
        self._lock = threading.Lock()
        self.posters = PosterCache(render)

    def _options(self, params: Mapping[str, str]) -> dict[str, Any]:
        return {
            "top": int_param(params, "top", 10, 1, MAX_TOP),
            "per_video": int_param(params, "per_video", 3, 1, MAX_PER_VIDEO),
            "exact": bool_param(params, "exact"),
            "timeline": bool_param(params, "timeline"),
        }

    def search(self, params: Mapping[str, str]) -> list[dict]:
        text = query_text(params)
        options = self._options(params)
        with self._lock:
            return self.index.query(text, **options)

    def similar(self, params: Mapping[str, str]) -> list[dict]:
        if _param(params, "window_id") is None:
            raise BadRequest("missing parameter window_id")
        window_id = int_param(params, "window_id", 0, 0, 2**62)
        options = self._options(params)
        with self._lock:
            try:
                return self.index.query_by_window(window_id, **options)
            except (KeyError, IndexError):
                raise BadRequest(f"no window {window_id} in the index") from None

    def status(self) -> dict:
        with self._lock:
            return self.index.status()

    def video_path(self, video_id: str) -> Path:
        check_video_id(video_id)
        try:  # a lookup in the index's table, no model: a running query does not hold up playback
            path = Path(self.index.video_file(video_id))
        except KeyError:
            raise HTTPException(404, f"no video {video_id!r} in the index") from None
        if not path.is_file():
            raise HTTPException(404, f"video {video_id!r} is in the index but its file is gone")
        return path

    def poster(self, video_id: str, params: Mapping[str, str]) -> bytes:
        path = self.video_path(video_id)
        from dataloaders.video_reader import VideoDecodeError

        t = float_param(params, "t", 0.0, 1e7)
        try:
            return self.posters.get(video_id, path, t)
        except VideoDecodeError as err:  # also t past the end: "no frame inside [start, end]"
            raise HTTPException(422, f"cannot decode video {video_id!r} at t={t:g} s: {err.reason}") from None


def _json_list(results: list[dict]) -> JSONResponse:
    return JSONResponse(results, headers={"Cache-Control": "no-store"})


def create_app(index, render: Callable[[Path, float], bytes] = render_poster) -> Starlette:
    """The web app over an opened :class:`search.api.SearchIndex` (or anything with its methods)."""
    service = SearchService(index, render)

    async def home(request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html")

    def api_search(request: Request) -> Response:
        return _json_list(service.search(request.query_params))

    def api_similar(request: Request) -> Response:
        return _json_list(service.similar(request.query_params))

    def api_status(request: Request) -> Response:
        return JSONResponse(service.status())

    def video(request: Request) -> Response:
        path = service.video_path(request.path_params["video_id"])
        return FileResponse(path, headers={"Cache-Control": "no-cache"})

    def poster(request: Request) -> Response:
        data = service.poster(request.path_params["video_id"], request.query_params)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    async def bad_request(request: Request, exc: Exception) -> Response:
        return JSONResponse({"error": str(exc)}, status_code=400)

    async def http_error(request: Request, exc: HTTPException) -> Response:
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    async def server_error(request: Request, exc: Exception) -> Response:
        logger.exception("request %s failed", request.url.path)
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); see the server log"}, status_code=500)

    routes = [
        Route("/", home),
        Route("/api/search", api_search),
        Route("/api/similar", api_similar),
        Route("/api/status", api_status),
        Route("/video/{video_id:path}", video),
        Route("/poster/{video_id:path}", poster),
        Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    handlers = {BadRequest: bad_request, HTTPException: http_error, Exception: server_error}
    return Starlette(routes=routes, exception_handlers=handlers)


# ----------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("index", metavar="IDX", help="index folder made by `python -m search index`")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    parser.add_argument(
        "--host", default="127.0.0.1",
        help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 exposes your videos to the network)",
    )


def main(args: argparse.Namespace) -> int:
    """``python -m search serve`` (search/__main__.py calls add_arguments, then this)."""
    import uvicorn

    from search.api import open_index

    index = open_index(args.index)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning("binding %s: anyone who can reach this address can search and watch the indexed videos", args.host)
    print(f"Serving {args.index} at http://{args.host}:{args.port}/  (Ctrl-C stops)", flush=True)
    # Ctrl-C should not wait for a player's open connection: 5 s of grace, then close.
    uvicorn.run(create_app(index), host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=5)
    return 0


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="python -m search.serve", description=__doc__.splitlines()[0])
    add_arguments(_parser)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    raise SystemExit(main(_parser.parse_args()))
