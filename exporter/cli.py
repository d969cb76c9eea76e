"""The `inference-exporter` command: run, check-config, once, explain."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from exporter import __version__
from exporter.core.logs import FORMATS, LEVELS, configure
from exporter.envflags import EnvArgumentParser
from exporter.format import accel

DESCRIPTION = """\
One Prometheus scrape target per GPU inference host. inference-exporter polls the
/metrics endpoints of vLLM, SGLang, TGI, Triton, TensorRT-LLM, NIM, Dynamo, llama.cpp,
LMDeploy, Ray Serve LLM, TEI, the vLLM production-stack router and the Gateway API
Inference Extension (and any other Prometheus endpoint) listed in a YAML file, each
on its own interval with retries, and the host's NVIDIA GPUs through NVML (type: nvml),
and serves them all, labelled by target, from one /metrics endpoint. Backends that publish statistics over
NATS (Dynamo, NIM, NATS micro-services) are asked by request and reply instead.
"""

EPILOG = """\
examples:
  inference-exporter run --demo                    bundled example config plus one simulated backend per profile
  inference-exporter run --config /etc/inference-exporter/config.yaml
  inference-exporter run --config config.yaml --web.config.file web.yml   TLS and basic auth on the endpoint
  inference-exporter check-config config.yaml      validate; every error with file:line
  inference-exporter once --config config.yaml --target vllm
  inference-exporter explain --config config.yaml --target vllm   which profile, and where each unified series comes from
  INFERENCE_EXPORTER_LISTEN=:9898 inference-exporter run   options from the environment, named in each command's --help

Every option of `run` (and --config, --web.config.file, --log-level and --log-format wherever they
appear) can also be set by the environment variable named after it, as `[env: NAME]` in the command's
--help; a flag on the command line wins over its variable, an empty variable counts as unset.
"""

ENV_EPILOG = """\
Each [env: NAME] variable sets its option when the flag is not on the command line (a flag wins;
an empty variable counts as unset). Switches such as --demo take true/false, 1/0 or yes/no.
"""


def bundled_config() -> Path:
    """The example config shipped in the wheel, or the one at the top of a source checkout."""
    from importlib import resources  # only `run` without --config reads it

    packaged = resources.files("exporter").joinpath("config.example.yaml")
    if packaged.is_file():
        return Path(str(packaged))
    return Path(__file__).resolve().parent.parent / "config.example.yaml"


_WEB_CONFIG: dict = {
    "type": Path,
    "metavar": "FILE",
    "help": "TLS, basic auth and response headers for the endpoint, in the Prometheus exporter-toolkit format "
    "(tls_server_config, basic_auth_users, http_server_config); read again when it or its certificates change",
}


def listen_address(value: str) -> str:
    """--listen's type: `HOST:PORT` as the config's `listen` accepts it, checked before anything starts."""
    from exporter.config.loader import parse_listen

    try:
        parse_listen(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = EnvArgumentParser(
        prog="inference-exporter",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"inference-exporter {__version__} (accelerator: {accel.IMPLEMENTATION})",
        help="show the version, and whether the compiled accelerator (c) or pure Python (python) serves; exit",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    logging = EnvArgumentParser(add_help=False)
    logging.add_env_argument(
        "--log-level", choices=LEVELS, default="info", help="least severe events to log (default: info)"
    )
    logging.add_env_argument(
        "--log-format",
        choices=FORMATS,
        default="auto",
        help="json, console, or auto: console lines on a terminal, JSON otherwise (default: auto)",
    )

    run = commands.add_parser(
        "run",
        parents=[logging],
        help="run the daemon",
        description="Poll every target on its interval and serve /metrics, /healthz, /readyz, /targets and /overview. "
        "The config is loaded again when the file changes (checked every second; a Kubernetes ConfigMap update "
        "included) and on SIGHUP; a bad file keeps the running one. SIGTERM or SIGINT stops within seconds.",
        epilog=ENV_EPILOG,
    )
    run.add_env_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help=f"the YAML config (default: the bundled example, {bundled_config().name}, which listens on 127.0.0.1)",
    )
    run.add_env_argument(
        "--listen",
        type=listen_address,
        metavar="HOST:PORT",
        help="where to serve, overriding the config's listen (e.g. 0.0.0.0:9898)",
    )
    run.add_env_argument("--web.config.file", dest="web_config_file", **_WEB_CONFIG)
    run.add_env_argument(
        "--demo",
        action="store_true",
        help="also start one simulated backend per profile (vLLM, SGLang, TGI, Triton, NIM, Dynamo, llama.cpp...) "
        'on loopback and poll each as target "demo-<profile>" (their series carry demo="true")',
    )

    check = commands.add_parser(
        "check-config",
        parents=[logging],
        help="validate a config file",
        description="Validate FILE. Exit 0 when it is valid; otherwise print every error with file:line and exit 1.",
        epilog=ENV_EPILOG,
    )
    check.add_argument("file", type=Path, metavar="FILE")
    check.add_env_argument("--web.config.file", dest="web_config_file", **_WEB_CONFIG)

    once = commands.add_parser(
        "once",
        parents=[logging],
        help="poll once and print what /metrics would serve",
        description="Poll the targets once (with retries), print the exposition text to stdout and each failure "
        "to stderr; exit 1 if any selected target failed. For debugging a target without running the daemon.",
        epilog=ENV_EPILOG,
    )
    once.add_env_argument("--config", type=Path, metavar="FILE", required=True, help="the YAML config (required)")
    once.add_argument("--target", action="append", metavar="NAME", help="poll only this target (repeatable)")

    explain = commands.add_parser(
        "explain",
        parents=[logging],
        help="say which profile a target uses and where each unified series comes from",
        description="Poll one target once and print which backend profile it uses and why (set in the config, or "
        "the family that matched), then, for each concept of the unified vocabulary, the upstream series it comes "
        "from or why it is missing. Exit 1 if the poll fails.",
        epilog=ENV_EPILOG,
    )
    explain.add_env_argument("--config", type=Path, metavar="FILE", required=True, help="the YAML config (required)")
    explain.add_argument("--target", metavar="NAME", required=True, help="the target to explain")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure(args.log_level, args.log_format)
    return {"run": _run, "check-config": _check_config, "once": _once, "explain": _explain}[args.command](args)


def _load(path: Path):
    from exporter.config.loader import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return None


def _load_web(path: Path | None):
    """The web config's live view, None without one; False if the file is bad (its errors printed)."""
    from exporter.config.loader import ConfigError
    from exporter.config.web import WebSecurity

    if path is None:
        return None
    try:
        return WebSecurity(path)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return False


def _run(args: argparse.Namespace) -> int:
    from exporter.runtime.daemon import Daemon, ListenError

    path = args.config or bundled_config()
    config = _load(path)
    web_security = _load_web(args.web_config_file)
    if config is None or web_security is False:
        return 1
    daemon = Daemon(config, config_path=path, listen=args.listen, demo=args.demo, web_security=web_security)
    try:
        asyncio.run(daemon.run())
    except ListenError:  # already logged, as one error event
        return 1
    return 0


def _check_config(args: argparse.Namespace) -> int:
    config = _load(args.file)
    web_security = _load_web(args.web_config_file)
    if config is None or web_security is False:
        return 1
    print(f"{args.file}: valid, {len(config.targets)} target(s)")
    for profile in config.loaded_profiles:
        print(
            f"  profile {profile.name} (priority {profile.priority}, detects {', '.join(profile.detect)}): "
            f"{len(profile.series)} concept(s)"
        )
    if web_security is not None:
        web = web_security.config
        print(
            f"{args.web_config_file}: valid, TLS {'on' if web.tls else 'off'}, "
            f"{len(web.basic_auth_users)} basic auth user(s), {len(web.headers)} header(s)"
        )
    return 0


def _once(args: argparse.Namespace) -> int:
    from exporter.runtime.once import run_once

    config = _load(args.config)
    if config is None:
        return 1
    known = {target.name for target in config.targets}
    unknown = [name for name in args.target or [] if name not in known]
    if unknown:
        print(
            f"{args.config}: no target named {', '.join(unknown)}; known: {', '.join(sorted(known))}", file=sys.stderr
        )
        return 1
    return run_once(config, args.target)


def _explain(args: argparse.Namespace) -> int:
    from exporter.core.redact import Secrets
    from exporter.serve.explain import poll_and_explain
    from exporter.sources import SourceError

    config = _load(args.config)
    if config is None:
        return 1
    target = next((t for t in config.targets if t.name == args.target), None)
    if target is None:
        known = ", ".join(sorted(t.name for t in config.targets))
        print(f"{args.config}: no target named {args.target}; known: {known}", file=sys.stderr)
        return 1
    try:
        explanation = asyncio.run(poll_and_explain(target))
    except SourceError as exc:
        print(f"target {target.name} failed: {exc.reason}: {Secrets(target).scrub(exc.message)}", file=sys.stderr)
        return 1
    sys.stdout.write(explanation.text())
    return 0
