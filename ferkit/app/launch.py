"""``ferkit app``: start the Streamlit web app on localhost.

    ferkit app                      # http://localhost:8501, opens a browser tab
    ferkit app --port 8600 --model ferplus --headless
    ferkit app --model my_model.onnx
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

from ..weights import model_choices
from . import MAX_UPLOAD_MB, MODEL_ENV

APP_FILE = Path(__file__).resolve().parent / "main.py"
DEFAULT_PORT = 8501
# Streamlit runs every page view in a new thread, and glibc gives threads their own malloc arenas:
# with one per thread, the large temporary arrays of big photos left ~30 MB per upload stranded in
# arenas (a server grew 400 MB over 14 uploads of 24 MP photos; with 2 arenas, 140 MB, most of it the
# bounded cache of previews). A value already in the environment is kept.
MALLOC_ARENAS = 2


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ferkit app", description="Start the ferkit Streamlit web app.")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port to listen on (default: {DEFAULT_PORT})")
    parser.add_argument("--address", default="localhost",
                        help="address to listen on (default: localhost; 0.0.0.0 to serve the network)")
    parser.add_argument("--model", default=None, metavar="NAME|PATH",
                        help=f"model the app starts with: a bundled name ({model_choices()}) or an .onnx path "
                             f"(default: ${MODEL_ENV} if set, else the bundled default)")
    parser.add_argument("--headless", action="store_true", help="do not open a browser tab (default: off)")
    return parser


def streamlit_command(args: argparse.Namespace) -> list[str]:
    """The ``streamlit run`` command line for ``args``."""
    return [
        sys.executable, "-m", "streamlit", "run", str(APP_FILE),
        "--server.port", str(args.port),
        "--server.address", args.address,
        "--server.headless", "true" if args.headless else "false",
        "--server.maxUploadSize", str(MAX_UPLOAD_MB),
        "--browser.gatherUsageStats", "false",
        "--client.toolbarMode", "minimal",  # no "Deploy" button: this app runs locally
    ]


def streamlit_env(args: argparse.Namespace) -> dict[str, str]:
    """The environment of the Streamlit process: the model choice, and ferkit importable from its script."""
    env = dict(os.environ)
    env.setdefault("MALLOC_ARENA_MAX", str(MALLOC_ARENAS))
    if args.model:
        model = Path(args.model).expanduser()
        env[MODEL_ENV] = str(model.resolve()) if model.suffix == ".onnx" else args.model
    package_parent = str(APP_FILE.parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH")) if p)
    return env


def main(argv: list[str] | None = None) -> int:
    parser = get_args_parser()
    args = parser.parse_args(argv)
    if not 1 <= args.port <= 65535:
        parser.error(f"--port {args.port} is not a port number (1-65535)")
    if args.model and Path(args.model).suffix == ".onnx" and not Path(args.model).expanduser().is_file():
        parser.error(f"--model {args.model}: file not found")
    print(f"ferkit app: http://{args.address}:{args.port}  (Ctrl+C to stop)", flush=True)
    with subprocess.Popen(streamlit_command(args), env=streamlit_env(args)) as server:
        # A supervisor's SIGTERM stops the server too instead of leaving it orphaned.
        signal.signal(signal.SIGTERM, lambda *_: server.terminate())
        return server.wait()


if __name__ == "__main__":
    sys.exit(main())
