"""The search page (``python -m search serve``): its HTTP API and, in a real Chromium, the page.

A small real index is built once for the module with search-core's indexer (its tiny random
seqTransf CLIP, tests/search_helpers.py) over three generated H.264 videos. A random model's text scores mean nothing, so the
video a typed query must put first is the one the index itself ranks first
(:meth:`SearchIndex.query`); "more like this" must put the clicked range's own video first
(a window's embedding is nearest to itself).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from tests.engine_helpers import free_port
from tests.search_helpers import run_index

ROOT = Path(__file__).resolve().parents[1]
QUERY = "a white square slides across a coloured field"
# name -> (background RGB, seconds); 25 fps, 96x64 H.264
VIDEOS = {"dawn.mp4": ((200, 90, 40), 12), "sea.mp4": ((30, 90, 200), 8), "forest.mp4": ((40, 150, 60), 16)}
FPS = 25


# ----------------------------------------------------------------------------- fixtures


def scene_frame(background: tuple[int, int, int]):
    """Frames of a white square crossing a coloured background, with a brightness ramp."""

    def frame(index: int, width: int, height: int) -> np.ndarray:
        img = np.empty((height, width, 3), np.uint8)
        ramp = np.linspace(0.6, 1.0, width)[None, :, None]
        img[:] = (np.array(background)[None, None, :] * ramp).astype(np.uint8)
        side = height // 3
        x = (index * 2) % (width - side)
        y = (height - side) // 2 + int(side * np.sin(index / 10) / 2)
        img[y : y + side, x : x + side] = 255
        return img

    return frame


def write_scene_videos(folder: Path) -> None:
    """Encode :data:`VIDEOS` (run in a child process: see tests/video_fixtures.py on why)."""
    from tests.video_fixtures import write_video

    for name, (background, seconds) in VIDEOS.items():
        write_video(folder / name, codec="libx264", fps=Fraction(FPS), width=96, height=64,
                    num_frames=seconds * FPS, options={"preset": "veryfast", "crf": "23", "g": "25"},
                    frame_fn=scene_frame(background))


def build_index(videos: Path, index: Path) -> None:
    code = f"import pathlib, tests.test_search_web as t; t.write_scene_videos(pathlib.Path({str(videos)!r}))"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=300)
    run_index([videos], index, window=4.0, stride=2.0)  # search-core's tiny random seqTransf model


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("search_web")
    build_index(root / "videos", root / "index")
    return root / "index"


@pytest.fixture(scope="module")
def index(index_dir):
    from search.api import open_index

    return open_index(index_dir)


@pytest.fixture(scope="module")
def client(index):
    from starlette.testclient import TestClient

    from search.serve import create_app

    with TestClient(create_app(index)) as test_client:
        yield test_client


def roundtrip(obj):
    return json.loads(json.dumps(obj))


# ----------------------------------------------------------------------------- JSON API


def test_search_returns_the_cli_json_objects(client, index):
    response = client.get("/api/search", params={"q": QUERY, "top": 2, "per_video": 2})
    assert response.status_code == 200
    assert response.json() == roundtrip(index.query(QUERY, top=2, per_video=2))
    assert [r["rank"] for r in response.json()] == [1, 2]
    assert all("timeline" not in r for r in response.json())


def test_search_json_is_what_the_cli_prints(client, index_dir, capsys):
    from search.__main__ import main as search_cli

    assert search_cli(["query", str(index_dir), QUERY, "--top", "2", "--per-video", "2", "--timeline", "--json"]) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    served = client.get("/api/search", params={"q": QUERY, "top": 2, "per_video": 2, "timeline": 1}).json()
    assert served == printed and len(served) == 2


def test_search_with_timeline_scores_every_window(client, index):
    results = client.get("/api/search", params={"q": QUERY, "timeline": "1"}).json()
    assert len(results) == len(VIDEOS)
    for result in results:
        windows = result["timeline"]
        assert windows[0]["start"] == 0.0 and windows[-1]["end"] == pytest.approx(result["duration"], abs=0.5)
        assert max(w["score"] for w in windows) == pytest.approx(result["score"], abs=1e-3)


def test_more_like_this_puts_the_windows_own_video_first(client, index):
    for result in index.query(QUERY, per_video=1):
        window_id = result["ranges"][0]["window_id"]
        similar = client.get("/api/similar", params={"window_id": window_id, "top": 3}).json()
        assert similar == roundtrip(index.query_by_window(window_id, top=3))
        assert similar[0]["video_id"] == result["video_id"]
        assert similar[0]["score"] == pytest.approx(1.0, abs=1e-2)


def test_status(client):
    status = client.get("/api/status").json()
    assert status["files"] == len(VIDEOS)


def test_page_and_its_assets_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and "<video" in page.text and "/static/app.js" in page.text
    for asset in ("/static/app.js", "/static/style.css"):
        assert client.get(asset).status_code == 200


# ----------------------------------------------------------------------------- files


def first_video(index) -> tuple[str, Path]:
    video = index.videos[0]
    return video.video_id, Path(video.path)


def test_video_is_served_whole_and_by_range(client, index):
    video_id, path = first_video(index)
    data = path.read_bytes()
    whole = client.get(f"/video/{video_id}")
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["accept-ranges"] == "bytes" and whole.headers["content-type"] == "video/mp4"
    part = client.get(f"/video/{video_id}", headers={"Range": "bytes=100-1099"})
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 100-1099/{len(data)}"
    assert part.content == data[100:1100]
    tail = client.get(f"/video/{video_id}", headers={"Range": "bytes=-500"})
    assert tail.status_code == 206 and tail.content == data[-500:]
    beyond = client.get(f"/video/{video_id}", headers={"Range": f"bytes={len(data) + 10}-"})
    assert beyond.status_code == 416


def traversal_urls(index_dir: Path, video_path: Path) -> list[str]:
    secret = index_dir.parent / "secret.txt"
    return [
        "/video/..%2F..%2F..%2Fetc%2Fpasswd",
        "/video/%2Fetc%2Fpasswd",
        f"/video/{video_path}",  # an indexed file, but by path: only ids are looked up
        f"/video/{str(video_path).replace('/', '%2F')}",
        f"/video/..%2F{secret.name}",
        "/video/..%5C..%5Cwindows%5Cwin.ini",
        "/video/C:%5Cwindows%5Cwin.ini",
        "/video/~root",
        "/video/0123456789abcdef",  # id-shaped, not in the index
        f"/poster/..%2F{secret.name}?t=1",
        "/static/..%2Fserve.py",
        "/static/%2E%2E/serve.py",
        "/static/../serve.py",
    ]


def test_paths_and_unknown_ids_are_refused(client, index, index_dir):
    _, video_path = first_video(index)
    (index_dir.parent / "secret.txt").write_text("SECRET")
    for url in traversal_urls(index_dir, video_path):
        response = client.get(url)
        assert response.status_code in (400, 404), url
        assert b"SECRET" not in response.content and b"import" not in response.content, url
        assert not response.content.startswith(b"\x00\x00\x00"), url  # no mp4 box came back


def test_poster_is_a_jpeg_of_the_frame_and_cached(index):
    from PIL import Image
    from starlette.testclient import TestClient

    from search.serve import POSTER_WIDTH, create_app, render_poster

    calls = []

    def counting(path, t):
        calls.append((path, t))
        return render_poster(path, t)

    video_id, _ = first_video(index)
    with TestClient(create_app(index, render=counting)) as test_client:
        first = test_client.get(f"/poster/{video_id}", params={"t": "3.0"})
        again = test_client.get(f"/poster/{video_id}", params={"t": "3.001"})
    assert first.status_code == 200 and first.headers["content-type"] == "image/jpeg"
    assert again.content == first.content and len(calls) == 1
    image = Image.open(__import__("io").BytesIO(first.content)).convert("RGB")
    assert image.width == POSTER_WIDTH
    background = np.array(image)[:, -5:].reshape(-1, 3).mean(axis=0)  # right edge: background, not the square
    expected = np.array(VIDEOS[Path(index.videos[0].path).name][0])
    assert np.abs(background - expected).max() < 40


# ----------------------------------------------------------------------------- bad requests


BAD_REQUESTS = [
    "/api/search",
    "/api/search?q=",
    "/api/search?q=%20%20%20",
    "/api/search?q=" + "x" * 1001,
    "/api/search?q=ok&top=abc",
    "/api/search?q=ok&top=0",
    "/api/search?q=ok&top=1e9",
    "/api/search?q=ok&top=100000000000000000000000",
    "/api/search?q=ok&per_video=-1",
    "/api/search?q=ok&exact=maybe",
    "/api/search?q=ok&timeline=2",
    "/api/similar",
    "/api/similar?window_id=x",
    "/api/similar?window_id=-3",
    "/api/similar?window_id=999999999",
    "/api/similar?window_id=1.5",
]


def test_malformed_requests_get_400_with_a_message(client, index):
    video_id, _ = first_video(index)
    posters = [f"/poster/{video_id}", f"/poster/{video_id}?t=abc", f"/poster/{video_id}?t=nan",
               f"/poster/{video_id}?t=-1", f"/poster/{video_id}?t=inf"]
    for url in BAD_REQUESTS + posters:
        response = client.get(url)
        assert response.status_code == 400, (url, response.text)
        message = response.json()["error"]
        assert message and "Traceback" not in message, url


def test_a_poster_past_the_end_is_refused_with_the_reason(client, index):
    video_id, _ = first_video(index)
    response = client.get(f"/poster/{video_id}", params={"t": "999"})
    assert response.status_code == 422 and "no frame inside" in response.json()["error"]


def test_an_unexpected_failure_is_a_500_without_traceback(tmp_path):
    from starlette.testclient import TestClient

    from search.serve import create_app

    class BrokenIndex:
        def query(self, *args, **kwargs):
            raise RuntimeError(f"model file {tmp_path}/weights.bin vanished")

    with TestClient(create_app(BrokenIndex()), raise_server_exceptions=False) as test_client:
        response = test_client.get("/api/search", params={"q": "anything"})
    assert response.status_code == 500
    assert "Traceback" not in response.text and str(tmp_path) not in response.text
    assert "internal error" in response.json()["error"]


def test_serving_writes_nothing_in_the_index(index_dir, index):
    from starlette.testclient import TestClient

    from search.serve import create_app

    def snapshot():
        return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(index_dir.rglob("*"))}

    before = snapshot()
    video_id, _ = first_video(index)
    with TestClient(create_app(index)) as test_client:
        for url in ("/api/search?q=a&timeline=1", "/api/status", f"/video/{video_id}", f"/poster/{video_id}?t=1"):
            assert test_client.get(url).status_code == 200
    assert snapshot() == before


def test_serve_binds_loopback_by_default():
    import argparse

    from search.serve import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["IDX"])
    assert (args.host, args.port) == ("127.0.0.1", 8000)


# ----------------------------------------------------------------------------- in a browser


def find_chromium() -> str | None:
    """A Chromium for Playwright: $CHROMIUM, the system's, or one Playwright downloaded."""
    for candidate in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = candidate and shutil.which(candidate)
        if found:
            return found
    try:
        from playwright.sync_api import sync_playwright

        with sync_playwright() as pw:
            bundled = pw.chromium.executable_path
        return bundled if Path(bundled).is_file() else None
    except Exception:
        return None


def skip_loudly(reason: str) -> None:
    message = f"BROWSER TEST NOT RUN: {reason}. The search page was NOT tested in a browser."
    warnings.warn(message, stacklevel=2)
    print(f"\n{'!' * 20} {message} {'!' * 20}", file=sys.stderr)
    pytest.skip(message)


@pytest.fixture(scope="module")
def server_url(index_dir):
    """``python -m search serve IDX --port P`` in a child process, the real command."""
    port = free_port()
    cmd = [sys.executable, "-m", "search", "serve", str(index_dir), "--port", str(port)]
    process = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                pytest.fail(f"search serve exited with {process.returncode}:\n{process.stdout.read()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/api/status", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("search serve did not answer within 180 s")
                time.sleep(0.2)
        # The first query builds the model: do it here, not inside the page's timeouts.
        with urllib.request.urlopen(f"{url}/api/search?q=warm+up", timeout=300) as response:
            assert response.status == 200
        yield url
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def chromium() -> str:
    """Asked for before the server starts, so a missing browser skips at once."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        skip_loudly("the playwright package is not installed (pip install -r requirements-dev.txt)")
    found = find_chromium()
    if found is None:
        skip_loudly("no Chromium found (install it: apt-get install -y chromium, or set CHROMIUM=/path/to/chrome)")
    return found


@pytest.fixture(scope="module")
def browser(chromium):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=chromium, args=["--autoplay-policy=no-user-gesture-required"])
        try:
            yield launched
        finally:
            launched.close()


PLAYER = "document.getElementById('player')"


def js_number(x: float) -> str:
    """``x`` as JavaScript prints it (2 -> "2", 2.5 -> "2.5")."""
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def test_page_finds_plays_and_finds_more_like_it(chromium, server_url, browser, index):
    expected = index.query(QUERY, top=10, per_video=3)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(120000)  # generous for a loaded CI machine; each wait ends on an event
    errors = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(server_url + "/")
    page.fill("#q", QUERY)
    page.press("#q", "Enter")
    page.wait_for_selector("#results .video .range")

    cards = page.locator("#results .video")
    assert cards.count() == len(expected)
    assert [cards.nth(i).get_attribute("data-video-id") for i in range(cards.count())] == [r["video_id"] for r in expected]
    first = cards.nth(0)
    assert first.locator(".timeline .window").count() == len(index.query(QUERY, timeline=True)[0]["timeline"])
    page.wait_for_function("[...document.querySelectorAll('.range img')].every(i => i.complete && i.naturalWidth > 0)")

    # Play a range of the first video (one that does not start at 0, so the player must seek):
    # playback begins at its start and stops at its end.
    ranges = expected[0]["ranges"]
    choice = next((i for i, r in enumerate(ranges) if r["start"] > 0), 0)
    best = ranges[choice]
    page.evaluate(f"() => {{ const v = {PLAYER}; "
                  "v.addEventListener('playing', () => { window.playingAt = v.currentTime; }, {once: true}); }")
    first.locator(".range").nth(choice).click()
    page.wait_for_function("window.playingAt !== undefined")
    assert page.evaluate("window.playingAt") == pytest.approx(best["start"], abs=0.25)
    assert page.evaluate(f"{PLAYER}.src").endswith(
        f"/video/{expected[0]['video_id']}#t={js_number(best['start'])},{js_number(best['end'])}")
    page.wait_for_function(f"{PLAYER}.paused && {PLAYER}.currentTime > {best['start'] + 0.1}")
    assert page.evaluate(f"{PLAYER}.currentTime") == pytest.approx(best["end"], abs=0.5)
    assert page.evaluate(f"{PLAYER}.error") is None

    # More like this: the clicked range's own video comes first.
    first.locator(".more").nth(choice).click()
    page.wait_for_function("document.getElementById('message').textContent.startsWith('More like')")
    page.wait_for_selector("#results .video")
    similar = index.query_by_window(best["window_id"])
    shown_first = page.locator("#results .video").first.get_attribute("data-video-id")
    assert shown_first == expected[0]["video_id"] == similar[0]["video_id"]
    assert errors == []
    page.close()


def test_page_shows_the_servers_message_for_a_bad_query(chromium, server_url, browser):
    page = browser.new_page()
    page.set_default_timeout(120000)
    page.goto(server_url + "/?q=" + "x" * 1001)
    page.wait_for_selector("#message.error")
    assert "too long" in page.text_content("#message")
    page.close()
