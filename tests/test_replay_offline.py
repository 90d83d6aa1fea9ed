"""`diffrl eval ... html=true`'s replay.html is one self-contained file that renders without a network."""

import base64
import pathlib
import re
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import pytest

from diffrl.envs import make_env
from diffrl.viewer import VENDOR_DIR, render_offline

REPO = pathlib.Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
FRAMES = 12


@pytest.fixture(scope="module")
def replay_html(tmp_path_factory) -> pathlib.Path:
    """An acrobot replay written as ``write_replay`` writes it: the env's ``replay`` hook, one frame per step."""
    env = make_env("acrobot", "analytic")
    t = jnp.arange(FRAMES, dtype=jnp.float32)[:, None]
    states = types.SimpleNamespace(q=jnp.concatenate([0.3 * t, 0.5 + 0.1 * t], axis=1), qd=jnp.zeros((FRAMES, 2)))
    sys_, states = env.replay(states)
    frames = [jax.tree.map(lambda x, i=i: x[i], states) for i in range(FRAMES)]
    path = tmp_path_factory.mktemp("replay") / "replay.html"
    path.write_text(render_offline(sys_, frames))
    return path


def test_the_replay_loads_no_script_from_the_network(replay_html):
    page = replay_html.read_text()
    assert "brax-viewer" in page and "new Viewer(" in page
    scripts = re.findall(r"<script\b[^>]*>.*?</script>", page, flags=re.S | re.I)
    assert len(scripts) >= 3  # importmap, pako, the trajectory, the viewer module
    for script in scripts:
        assert not re.search(r"https?://", script), f"a script reaches for the network: {script[:300]}"
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)  # no external script, stylesheet or icon
    importmap = next(s for s in scripts if 'type="importmap"' in s)
    for spec in ("three", "three/addons/controls/OrbitControls.js", "lilgui", "brax-viewer/viewer.js"):
        assert f'"{spec}": "data:text/javascript;base64,' in importmap
    # three.js itself is inlined, byte for byte
    three = base64.b64encode((VENDOR_DIR / "three.module.js").read_bytes()).decode("ascii")
    assert three in importmap


@pytest.mark.slow
@pytest.mark.skipif(not pathlib.Path(CHROMIUM).exists(), reason=f"needs Chromium at {CHROMIUM}")
def test_the_replay_renders_offline_in_headless_chromium(replay_html, tmp_path):
    """tools/check_replay.py: Chromium with the network cut off draws the page (a non-blank screenshot) and the page
    requests no http(s) URL."""
    png = tmp_path / "replay.png"
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "check_replay.py"), str(replay_html), str(png)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OK" in proc.stdout and png.stat().st_size > 5000


@pytest.mark.slow
@pytest.mark.skipif(not pathlib.Path(CHROMIUM).exists(), reason=f"needs Chromium at {CHROMIUM}")
def test_the_check_fails_on_brax_cdn_page(replay_html, tmp_path):
    """The same check on Brax's own page (scripts from CDNs) fails offline: the check can tell."""
    from brax.io import html

    env = make_env("acrobot", "analytic")
    states = types.SimpleNamespace(q=jnp.zeros((2, 2)), qd=jnp.zeros((2, 2)))
    sys_, states = env.replay(states)
    cdn_page = tmp_path / "cdn.html"
    cdn_page.write_text(html.render(sys_, [jax.tree.map(lambda x: x[0], states)]))
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "check_replay.py"), str(cdn_page), str(tmp_path / "cdn.png")],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "BLANK" in proc.stderr and "NOT OFFLINE" in proc.stderr
