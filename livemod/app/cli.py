"""Command line: ``livemod serve | scan | models | demo`` (also ``python -m livemod``)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from livemod import logs
from livemod.config import Config, load_config
from livemod.errors import LivemodError

if TYPE_CHECKING:
    from livemod.vision.manifest import ModelSpec


def _config(args: argparse.Namespace) -> Config:
    path = Path(args.config) if getattr(args, "config", None) else None
    return load_config(path)


async def _serve(config: Config) -> None:
    from livemod.app.daemon import Daemon

    daemon = Daemon(config)
    await daemon.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    reloads: set[asyncio.Task[None]] = set()

    def reload_lists() -> None:
        task = asyncio.create_task(daemon.reload_known_bad())
        reloads.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, reload_lists)
    print(
        f"livemod serving: http://{config.http.host}:{daemon.http_port} "
        f"events ws://{config.websocket.host}:{daemon.events.port}/v1/events",
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        await daemon.stop()


def cmd_serve(args: argparse.Namespace) -> int:
    config = _config(args)
    logs.setup(config.log_level)
    asyncio.run(_serve(config))
    return 0


def cmd_scan(args: argparse.Namespace) -> int:
    from livemod.app.progress import ProgressBar
    from livemod.app.scan import render_text, scan

    config = _config(args)
    logs.setup("WARNING" if args.json else config.log_level)
    # On stderr and only on a terminal: the report on stdout stays clean.
    bar = ProgressBar.for_terminal(sys.stderr, args.target)
    try:
        report = asyncio.run(
            scan(
                config,
                args.target,
                realtime=args.realtime,
                on_sample=bar.update if bar is not None else None,
            )
        )
    except BaseException:
        if bar is not None:
            bar.close(complete=False)
        raise
    if bar is not None:
        bar.close(complete=report["status"] == "ok")
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render_text(report))
    return 0 if report["status"] == "ok" else 1


def cmd_models(args: argparse.Namespace) -> int:
    from livemod.vision.manifest import check_all, load_manifest

    config = _config(args)
    specs = load_manifest(config.vision.manifest)
    statuses = check_all(specs)
    usable = [spec for spec, st in zip(specs, statuses, strict=True) if st.ok]
    fp16 = _prepare_fp16(config, usable) if args.fp16 else []
    if args.runtimes:
        return _prepare_runtimes(config, usable, as_json=args.json)
    if args.json:
        listing = [s.as_dict() for s in statuses]
        json.dump({"models": listing, "fp16": fp16} if args.fp16 else listing, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for st in statuses:
            mark = "ok  " if st.ok else "FAIL"
            print(f"{mark} {st.name:<14} {st.kind:<16} {st.path}")
            print(f"     license: {st.license}")
            if st.error:
                print(f"     error: {st.error}")
        for entry in fp16:
            _print_fp16(entry)
    # A variant that fails its accuracy check is not an error: precision auto keeps fp32.
    errors = any("error" in entry for entry in fp16)
    return 0 if all(s.ok for s in statuses) and not errors else 1


def _prepare_fp16(config: Config, specs: Sequence[ModelSpec]) -> list[dict[str, Any]]:
    """Convert and check each vision model's fp16 variant (``livemod models --fp16``)."""
    from livemod.vision import providers
    from livemod.vision.kinds import ANALYZER_KINDS
    from livemod.vision.precision import fp16_path, prepare_fp16, report_dict

    plan = providers.resolve(config.vision.providers)
    out: list[dict[str, Any]] = []
    for spec in specs:
        if spec.kind not in ANALYZER_KINDS:
            continue
        try:
            report = prepare_fp16(
                spec,
                config.vision.model_cache,
                providers=list(plan.providers),
                threads=config.vision.threads,
            )
        except LivemodError as exc:
            out.append({"model": spec.name, "error": str(exc)})
            continue
        entry = report_dict(report)
        entry["path"] = str(fp16_path(spec, config.vision.model_cache))
        out.append(entry)
    return out


def _prepare_runtimes(config: Config, specs: Sequence[ModelSpec], *, as_json: bool) -> int:
    """Measure (or read) each enabled vision model's CPU runtime (``livemod models
    --runtimes``): what a daemon started with this configuration will run it on."""
    import dataclasses

    from livemod.vision import cpu_runtime
    from livemod.vision.kinds import ANALYZER_KINDS

    out: list[dict[str, Any]] = []
    failed = False
    for spec in specs:
        if spec.kind not in ANALYZER_KINDS or spec.name not in config.vision.models:
            continue
        try:
            report = cpu_runtime.prepare(
                spec, config.vision.model_cache, threads=config.vision.threads
            )
        except LivemodError as exc:
            failed = True
            out.append({"model": spec.name, "error": str(exc)})
            continue
        out.append(dataclasses.asdict(report))
        if not as_json:
            print(f"{spec.name}: {report.summary()}")
    if as_json:
        json.dump(out, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for entry in out:
            if "error" in entry:
                print(f"FAIL {entry['model']}: {entry['error']}")
    return 1 if failed else 0


def _print_fp16(entry: dict[str, Any]) -> None:
    if "error" in entry:
        print(f"FAIL fp16 {entry['model']}: {entry['error']}")
        return
    verdict = "ok  " if entry["passed"] else "REJECTED (precision auto keeps fp32)"
    limits = ", ".join(f"{k} {v}" for k, v in entry["tolerances"].items())
    print(f"{verdict} fp16 {entry['model']} vs fp32 on {entry['ran_on']} (tolerance: {limits})")
    print("     " + ", ".join(f"{k} {v}" for k, v in entry["measured"].items()))
    for failure in entry["failures"][:5]:
        print(f"     over tolerance: {failure}")
    print(f"     file: {entry['path']} ({len(entry['frames'])} frames compared)")


def cmd_top(args: argparse.Namespace) -> int:
    from livemod.app.top import run

    return run(args.url, token=args.token, once=args.once, interval_s=args.interval)


def cmd_demo(args: argparse.Namespace) -> int:
    from livemod.app.demo import run_demo

    return run_demo(Path(args.workdir))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="livemod", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the daemon")
    p.add_argument("--config", help="YAML config file (default: embedded defaults)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("scan", help="moderate a recorded file or a URL to its end")
    p.add_argument("target", help="file path or URL")
    p.add_argument("--config", help="YAML config file")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--realtime", action="store_true", help="pace a file in real time")
    p.set_defaults(func=cmd_scan)

    p = sub.add_parser("models", help="list the models and verify their checksums")
    p.add_argument("--config", help="YAML config file")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--fp16",
        action="store_true",
        help="also make the vision models' fp16 variants (vision.model_cache) and compare "
        "them with fp32 on the configured providers",
    )
    p.add_argument(
        "--runtimes",
        action="store_true",
        help="measure (or read from vision.model_cache) which runtime runs each enabled "
        "vision model on this CPU: ONNX Runtime, OpenVINO fp32 or OpenVINO bf16",
    )
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("top", help="terminal view of a running daemon's sessions and latency")
    p.add_argument("--url", default="http://127.0.0.1:8080", help="the daemon's HTTP base URL")
    p.add_argument(
        "--token",
        default=os.environ.get("LIVEMOD_HTTP__TOKEN"),
        help="bearer token (default: $LIVEMOD_HTTP__TOKEN)",
    )
    p.add_argument("--once", action="store_true", help="print one snapshot and exit")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between redraws")
    p.set_defaults(func=cmd_top)

    p = sub.add_parser("demo", help="moderate a generated sample clip live, printing actions")
    p.add_argument("--workdir", default="var/demo", help="where the clip and state go")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except LivemodError as exc:
        print(f"livemod: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
