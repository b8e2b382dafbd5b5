"""`ddpm serve RUN_DIR|RUNS_DIR`: a local web page to sample, watch the reverse process and inpaint."""

from __future__ import annotations

import argparse

from ddpm.command_support import UsageError, check_count


def run(args: argparse.Namespace) -> int:
    """``ddpm serve``: check the flags, then serve until interrupted (needs the ``serve`` extra)."""
    check_count("--port", args.port)
    if args.port > 65535:
        raise UsageError(f"--port {args.port} is invalid; give a port from 1 to 65535")
    try:
        from ddpm.serve.server import serve
    except ImportError as err:
        raise UsageError(
            f"ddpm serve needs the serve extra ({err.name} is missing): pip install -e \".[serve]\""
        ) from None
    serve(args.path, host=args.host, port=args.port, allow_remote=args.allow_remote, device=args.device)
    return 0
