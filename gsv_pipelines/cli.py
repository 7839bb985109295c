"""`gsv`: seed the embedded defaults, run the demo, open the UI.

gsv seed    write demo data: agent-memory collections in Qdrant, platform secrets in Vault
gsv demo    start the local services, seed, materialize every asset once, print a summary
gsv dev     start the local services, seed, and run `dagster dev` on 127.0.0.1
gsv metrics serve the pipelines' Prometheus metrics (/metrics)
gsv alerts  list open incidents and dead letters, or replay the dead letters
"""

import argparse
import json
import os
import signal
import sys

from gsv_pipelines.lib.core.dagster_home import prepare_dagster_home
from gsv_pipelines.lib.core.processes import free_port
from gsv_pipelines.lib.core.settings import Settings, load_settings


def _say(message: str) -> None:
    print(f"gsv: {message}", flush=True)


def notifier_from_env(settings: Settings):
    """The notifier as the sensors bind it, from the same variables (for `gsv alerts`)."""
    from gsv_pipelines.lib.alerts.policy import load_alerts_policy
    from gsv_pipelines.lib.core.store import ArtefactStore
    from gsv_pipelines.resources.notifier import NotifierResource

    resource = NotifierResource(
        slack_webhook_url=os.environ.get("GSV_SLACK_WEBHOOK_URL") or None,
        teams_webhook_url=os.environ.get("GSV_TEAMS_WEBHOOK_URL") or None,
        webhook_url=os.environ.get("GSV_ALERT_WEBHOOK_URL") or None,
        webhook_secret=os.environ.get("GSV_ALERT_WEBHOOK_SECRET") or None,
        ui_url=settings.ui_url,
    )
    policy = load_alerts_policy(settings.alerts_policy)
    return resource.notifier(policy, ArtefactStore(settings.store_url))


def alerts(settings: Settings, action: str, ids: list[str]) -> int:
    """`list`: open incidents and dead letters; `replay`: send the dead letters again."""
    from gsv_pipelines.lib.alerts.deliver import dead_letters, replay
    from gsv_pipelines.lib.alerts.incidents import OPEN, Incidents

    notifier = notifier_from_env(settings)
    try:
        if action == "list":
            for incident in Incidents(notifier.store).all():
                if incident["status"] == OPEN:
                    _say(f"open since {incident['opened_at']}: {incident['title']}")
            for letter in dead_letters(notifier.store):
                _say(
                    f"dead letter {letter['id']} ({letter['channel']}, {letter['reason']}): "
                    f"{letter['alert']['status']} {letter['alert']['title']}"
                )
            return 0
        done = replay(notifier, ids or None)
        for letter, outcome in done:
            verdict = "delivered" if outcome.delivered else f"kept: {outcome.reason}"
            _say(f"dead letter {letter['id']} ({outcome.channel}): {verdict}")
        _say(f"replayed {len(done)} dead letter(s), {sum(o.delivered for _, o in done)} delivered")
        return 0 if all(o.delivered for _, o in done) else 1
    finally:
        notifier.close()


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)


def _interrupt(signum, frame) -> None:
    # Ctrl-C arrives more than once (the terminal's, and `uv run` passing it on): the first
    # starts the shutdown, later ones must not cut short the waits that stop every service.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def parser() -> argparse.ArgumentParser:
    """The `gsv` command line (also read by tests/deploy: what a manifest's command means)."""
    cli = argparse.ArgumentParser(prog="gsv", description=__doc__.split("\n\n")[0])
    commands = cli.add_subparsers(dest="command", required=True)
    for name, text in [
        ("seed", "write the demo data into Qdrant (and Vault when VAULT_TOKEN is set)"),
        ("demo", "start local services, seed, materialize every asset once, print a summary"),
        ("dev", "start local services, seed, and run `dagster dev` on 127.0.0.1"),
    ]:
        command = commands.add_parser(name, help=text, description=text)
        command.add_argument("--scale", type=float, default=1.0, help="demo data size factor")
        if name == "dev":
            command.add_argument("--host", default="127.0.0.1")
            command.add_argument("--port", type=int, default=3000, help="0 picks a free port")
    metrics = commands.add_parser("metrics", help="serve the Prometheus metrics")
    metrics.add_argument("--host", default="127.0.0.1", help="0.0.0.0 in a pod")
    metrics.add_argument("--port", type=int, default=None, help="default 9477")
    alerts_parser = commands.add_parser("alerts", help="open incidents, dead letters, replay")
    alerts_parser.add_argument("action", choices=["list", "replay"])
    alerts_parser.add_argument("ids", nargs="*", help="dead letters to replay (default: all)")
    return cli


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # Stopped by SIGTERM (a supervisor, `kill`): unwind so every started service is stopped too.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    signal.signal(signal.SIGINT, _interrupt)
    settings = load_settings()
    try:
        if args.command in ("seed", "demo", "dev"):
            # The embedded defaults' commands: demo-only code, imported for them alone.
            from gsv_pipelines.demo import commands

            if args.command == "seed":
                print(json.dumps(commands.seed(settings, scale=args.scale), indent=2))
                return 0
            if args.command == "demo":
                return commands.demo(settings, scale=args.scale)
            return commands.dev(settings, args.host, args.port or free_port(), scale=args.scale)
        if args.command == "alerts":
            return alerts(settings, args.action, args.ids)
        if args.command == "metrics":
            from gsv_pipelines import exporter

            prepare_dagster_home(settings)
            exporter.serve(settings, args.host, args.port or exporter.DEFAULT_PORT)
            return 0
    except KeyboardInterrupt:
        # The services it started were stopped on the way out (their `finally`s).
        _say(f"{args.command} interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
