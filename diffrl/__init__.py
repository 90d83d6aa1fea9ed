"""diffrl: an experiment runner for policy learning through differentiable physics."""

import contextlib
import io


def _import_mjx_quietly() -> None:
    """MuJoCo's MJX prints "Failed to import warp" on import when the optional NVIDIA Warp backend is
    absent (always, on a CPU machine); diffrl never uses it. Import it once with that print swallowed."""
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            import mujoco.mjx  # noqa: F401
        except ImportError:  # pragma: no cover - mujoco-mjx is a dependency of brax
            pass


_import_mjx_quietly()
