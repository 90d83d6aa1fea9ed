"""A self-contained, offline HTML replay through Brax's viewer.

``brax.io.html.render`` writes a page that loads its viewer, three.js, lil-gui and pako from CDNs, so it is blank
without a network. :func:`render_offline` builds the same page with every script inlined: the ES modules through an
importmap of ``data:text/javascript;base64,...`` URLs, pako as a ``data:`` classic script. three.js, lil-gui and pako
are vendored in ``diffrl/viewer/js/`` (see ``README.md`` there); Brax's own viewer modules are read from the installed
``brax`` package, so they follow its version.
"""

from __future__ import annotations

import base64
import html
import json
import pathlib
import re
import warnings
import zlib

VENDOR_DIR = pathlib.Path(__file__).parent / "js"

# The importmap Brax's index.html uses (three 0.150.1, lil-gui 0.18.0), with local files instead of CDN URLs.
VENDORED_VERSIONS = {"three": "0.150.1", "lil-gui": "0.18.0", "pako": "2.1.0"}
VENDORED_MODULES = {
    "three": "three.module.js",
    "three/addons/controls/OrbitControls.js": "OrbitControls.js",
    "lilgui": "lil-gui.esm.min.js",
}
PAKO = "pako_inflate.min.js"  # Brax's page loads pako 2.1.0 (a classic script) to inflate the trajectory.
# Brax's viewer modules (brax/visualizer/js/); viewer.js imports the others by relative path.
BRAX_MODULES = ("animator.js", "selector.js", "system.js", "viewer.js")
_BRAX_PREFIX = "brax-viewer/"

_TEMPLATE = """<!DOCTYPE html>
<html>
  <head>
    <meta charset="utf-8">
    <title>{title}</title>
    <style>
      body {{ margin: 0; padding: 0; }}
      #brax-viewer {{ height: {height}; margin: 0; padding: 0; }}
    </style>
    <script type="importmap">
{importmap}
    </script>
    <script src="{pako}"></script>
    <script type="application/javascript">
      var system = "{system}";
      system = atob(system);
      system = system.split('').map(function(x) {{ return x.charCodeAt(0); }});
      system = pako.inflate(system);
      system = new TextDecoder("utf-8").decode(system);
      system = JSON.parse(system);
    </script>
  </head>
  <body>
    <div id="brax-viewer"></div>
    <script type="module">
      import {{Viewer}} from '{viewer}';
      const domElement = document.getElementById("brax-viewer");
      var viewer = new Viewer(domElement, system);
    </script>
  </body>
</html>
"""


def _data_url(source: str) -> str:
    return "data:text/javascript;base64," + base64.b64encode(source.encode("utf-8")).decode("ascii")


def brax_js_dir() -> pathlib.Path:
    import brax

    return pathlib.Path(brax.__file__).parent / "visualizer" / "js"


def check_brax_versions() -> list[str]:
    """Where Brax's own page (``brax/visualizer/index.html``) asks for other versions than the vendored ones."""
    index = brax_js_dir().parent / "index.html"
    if not index.is_file():
        return []
    text = index.read_text(encoding="utf-8")
    mismatches = []
    for package, version in VENDORED_VERSIONS.items():
        wanted = set(re.findall(rf"{re.escape(package)}@([0-9][\w.-]*)", text))
        if wanted and wanted != {version}:
            mismatches.append(f"{package}: Brax's viewer uses {', '.join(sorted(wanted))}, diffrl vendors {version}")
    return mismatches


def _rewrite_relative_imports(source: str) -> str:
    """``from './animator.js'`` -> ``from 'brax-viewer/animator.js'``: a data: URL has no base for relative imports."""
    pattern = re.compile(r"""(\bfrom\s*|\bimport\s*)(['"])\./([\w.-]+\.js)\2""")
    return pattern.sub(lambda m: f"{m.group(1)}{m.group(2)}{_BRAX_PREFIX}{m.group(3)}{m.group(2)}", source)


def module_sources() -> dict[str, str]:
    """Import specifier -> JavaScript source, for every module the viewer loads."""
    sources = {spec: (VENDOR_DIR / name).read_text(encoding="utf-8") for spec, name in VENDORED_MODULES.items()}
    js_dir = brax_js_dir()
    for name in BRAX_MODULES:
        sources[_BRAX_PREFIX + name] = _rewrite_relative_imports((js_dir / name).read_text(encoding="utf-8"))
    for mismatch in check_brax_versions():
        warnings.warn(f"offline replay viewer: {mismatch} (update diffrl/viewer/js/)", stacklevel=2)
    known = set(sources)
    for spec, source in sources.items():  # every import left must be one the importmap resolves
        for imported in re.findall(r"""\b(?:from|import)\s*['"]([^'"]+)['"]""", source):
            if imported not in known:
                raise RuntimeError(f"{spec} imports {imported!r}, which the offline viewer does not provide")
    return sources


def render_json_offline(system_json: str, height: int | str = 480, title: str = "Brax visualizer") -> str:
    """The HTML page for a Brax system/trajectory JSON string (``brax.io.json.dumps``), with no network access."""
    importmap = json.dumps({"imports": {spec: _data_url(src) for spec, src in module_sources().items()}}, indent=2)
    system = base64.b64encode(zlib.compress(system_json.encode("utf-8"))).decode("ascii")
    return _TEMPLATE.format(
        title=html.escape(title),
        height=f"{height}px" if isinstance(height, int) else height,
        importmap=importmap,
        pako=_data_url((VENDOR_DIR / PAKO).read_text(encoding="utf-8")),
        system=system,
        viewer=_BRAX_PREFIX + "viewer.js",
    )


def render_offline(sys, states, height: int | str = 480, title: str = "Brax visualizer") -> str:
    """Like ``brax.io.html.render(sys, states, height)``, but one self-contained file that renders offline."""
    from brax.io import json as brax_json

    return render_json_offline(brax_json.dumps(sys, states), height=height, title=title)
