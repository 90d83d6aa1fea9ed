#!/usr/bin/env python
"""Screenshot a replay.html in headless Chromium with the network cut off, and fail if the page is blank.

    python tools/check_replay.py outputs/.../replay.html /tmp/replay.png

Chromium runs with every request sent to a proxy that does not exist (``--proxy-server=127.0.0.1:9``, loopback
included), so a page that needs a CDN renders nothing (``--netns`` also runs it in a fresh network namespace,
``unshare -n``). WebGL runs on SwiftShader (no GPU needed). The check fails when

- the page asked for any http(s)/ws(s) URL (read from Chromium's net log: requests the ``file://`` page made;
  Chromium's own background requests are not the page's), or
- the screenshot is blank: fewer than ``--min-colors`` distinct colours or zero variance (Brax's viewer draws a grey
  background, the bodies and a lil-gui panel; a page whose scripts did not load is one colour), or
- no body is drawn: fewer than ``--min-body-pixels`` coloured pixels (max - min channel > 30). The background, the
  floor, the panel and its text are all grey; the bodies are coloured (Brax's default and the diffrl tasks' MJCF
  colours). Pass ``--min-body-pixels 0`` for a system drawn in greys.

Exit status: 0 when the page rendered offline, 1 when it did not, 2 when Chromium failed.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

CHROMIUM = "/usr/bin/chromium"


def chromium_command(chromium: str, html: pathlib.Path, png: pathlib.Path, profile: str, budget_ms: int) -> list[str]:
    return [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        # offline: every request, loopback included, goes to a proxy nobody listens on
        "--proxy-server=127.0.0.1:9",
        "--proxy-bypass-list=<-loopback>",
        # WebGL without a GPU
        "--use-gl=angle",
        "--use-angle=swiftshader",
        "--enable-unsafe-swiftshader",
        f"--virtual-time-budget={budget_ms}",
        "--window-size=800,600",
        f"--screenshot={png}",
        html.resolve().as_uri(),
    ]


def _from_the_page(params: dict) -> bool:
    """A request the file:// page made (its origin is opaque: initiator "null"), not one of Chromium's own
    background requests (initiator "not an origin")."""
    initiator = str(params.get("initiator", ""))
    return (
        initiator == "null"
        or initiator.startswith("file:")
        or str(params.get("network_isolation_key", "")).startswith("file:")
    )


def page_network_requests(net_log: pathlib.Path) -> list[str]:
    """The http(s)/ws(s) URLs the page asked for, from a Chromium ``--log-net-log`` file."""
    if not net_log.is_file():
        return []
    text = net_log.read_text(errors="replace")
    try:
        log = json.loads(text)
    except json.JSONDecodeError:  # a net log cut short: fall back to the raw text
        found = re.findall(r'"initiator":\s*"(?:null|file:[^"]*)"[^\n]*?"url":\s*"([^"]+)"', text)
    else:
        start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
        found = [
            e["params"]["url"]
            for e in log.get("events", [])
            if e.get("type") == start and "url" in e.get("params", {}) and _from_the_page(e["params"])
        ]
    return sorted({url for url in found if re.match(r"(https?|wss?)://", url)})


def screenshot_stats(png: pathlib.Path) -> tuple[int, float, int]:
    """(number of distinct RGB colours, pixel variance, number of coloured pixels) of a PNG."""
    import matplotlib.image
    import numpy as np

    image = matplotlib.image.imread(str(png))
    rgb = np.round(np.asarray(image)[..., :3] * 255).astype(np.uint8)
    colors = np.unique(rgb.reshape(-1, 3), axis=0).shape[0]
    saturation = rgb.max(axis=-1).astype(np.int16) - rgb.min(axis=-1)
    return int(colors), float(rgb.astype(np.float64).var()), int(np.sum(saturation > 30))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("html", type=pathlib.Path, help="the replay.html to check")
    parser.add_argument("png", type=pathlib.Path, help="where to write the screenshot")
    parser.add_argument("--chromium", default=CHROMIUM, help=f"Chromium binary (default {CHROMIUM})")
    parser.add_argument("--min-colors", type=int, default=64, help="fewer distinct colours than this is blank")
    parser.add_argument("--min-body-pixels", type=int, default=100, help="fewer coloured pixels than this: no body")
    parser.add_argument("--budget-ms", type=int, default=5000, help="virtual time Chromium gives the page")
    parser.add_argument("--netns", action="store_true", help="also cut the network with `unshare -n` (needs root)")
    parser.add_argument("--timeout", type=float, default=120, help="seconds before Chromium is stopped")
    args = parser.parse_args(argv)

    if not args.html.is_file():
        print(f"check_replay: {args.html} does not exist", file=sys.stderr)
        return 2
    if shutil.which(args.chromium) is None:
        print(f"check_replay: no Chromium at {args.chromium} (apt-get install chromium)", file=sys.stderr)
        return 2
    args.png.parent.mkdir(parents=True, exist_ok=True)
    args.png.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="check-replay-") as profile:
        net_log = pathlib.Path(profile) / "netlog.json"
        command = chromium_command(args.chromium, args.html, args.png, profile, args.budget_ms)
        command.insert(1, f"--log-net-log={net_log}")
        if args.netns:
            command = ["unshare", "-n", *command]
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
        except subprocess.TimeoutExpired:
            print(f"check_replay: Chromium did not finish in {args.timeout:.0f} s", file=sys.stderr)
            return 2
        requested = page_network_requests(net_log)
    if not args.png.is_file():
        print(f"check_replay: Chromium wrote no screenshot (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        return 2
    colors, variance, body_pixels = screenshot_stats(args.png)
    if requested:
        print(
            f"check_replay: NOT OFFLINE: {args.html} requested {len(requested)} network URL(s): "
            + ", ".join(requested),
            file=sys.stderr,
        )
    if colors < args.min_colors or variance == 0.0:
        print(
            f"check_replay: BLANK: {args.png} has {colors} distinct colours (< {args.min_colors}) and variance "
            f"{variance:.1f}; the page did not render (offline; does it load scripts from the network?)",
            file=sys.stderr,
        )
        return 1
    if body_pixels < args.min_body_pixels:
        print(
            f"check_replay: NO BODY: {args.png} has {body_pixels} coloured pixels (< {args.min_body_pixels}); the "
            "viewer ran but drew no body",
            file=sys.stderr,
        )
        return 1
    if requested:
        return 1
    print(
        f"check_replay: OK: {args.png} has {colors} distinct colours, variance {variance:.1f}, "
        f"{body_pixels} coloured pixels"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
