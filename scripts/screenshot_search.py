"""Screenshot of the search page with results (for the README).

    python scripts/screenshot_search.py IDX "a red circle moves left" [--out docs/search_page.png]

Serves IDX on a free loopback port in this process, opens the page in Chromium (Playwright
driving the system's browser: $CHROMIUM or ``chromium`` on PATH), types the query, plays the
first range, waits for the results, posters and player, and saves a PNG of the page.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(index_path: str, port: int):
    import uvicorn

    from search.api import open_index
    from search.serve import create_app

    server = uvicorn.Server(uvicorn.Config(create_app(open_index(index_path)), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise SystemExit("the server did not start")
        time.sleep(0.05)
    return server, thread


def screenshot(url: str, query: str, out: Path, chromium: str, width: int, height: int) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--autoplay-policy=no-user-gesture-required"])
        page = browser.new_page(viewport={"width": width, "height": height})
        page.goto(url)
        page.fill("#q", query)
        page.press("#q", "Enter")
        page.wait_for_selector("#results .video .range", timeout=120000)
        # Posters load lazily: wait for those on screen.
        page.wait_for_function("[...document.querySelectorAll('.range img')]"
                               ".filter(i => i.getBoundingClientRect().top < innerHeight)"
                               ".every(i => i.complete && i.naturalWidth > 0)", timeout=120000)
        page.locator("#results .range").first.click()
        # Show the middle of the range, paused (the page stops at the range's end anyway).
        button = page.locator("#results .range").first
        middle = (float(button.get_attribute("data-start")) + float(button.get_attribute("data-end"))) / 2
        page.wait_for_function("document.getElementById('player').readyState >= 2")
        page.evaluate(f"() => {{ const v = document.getElementById('player'); v.pause(); v.currentTime = {middle}; }}")
        page.wait_for_function("!document.getElementById('player').seeking")
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out), full_page=False)
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("index", help="index folder")
    parser.add_argument("query", help="text to type in the search box")
    parser.add_argument("--out", default="docs/search_page.png")
    parser.add_argument("--chromium", default=None, help="browser executable (default: $CHROMIUM or chromium on PATH)")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=900)
    args = parser.parse_args()

    chromium = args.chromium or os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        raise SystemExit("no Chromium found: apt-get install -y chromium, or pass --chromium PATH")
    port = free_port()
    server, thread = start_server(args.index, port)
    try:
        screenshot(f"http://127.0.0.1:{port}/", args.query, Path(args.out), chromium, args.width, args.height)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
