"""``ocw alerts test [--kind K]``: send a test alert to every configured destination.

The alert is a sample of ``K`` (default ``test``), marked as a test (``[TEST]`` in its text,
``"test": true`` in a webhook's JSON) and keyed by the time, so every run sends again; it
passes ``OCW_ALERT_KINDS`` and the rate limit. One line per destination: ``telegram: sent
(message 42)`` or ``webhook: failed: 401 Unauthorized``. Exit 0 when at least one destination
got it, 1 when all failed, 2 when none is configured.

Wired into ``workers/cli.py`` with :func:`add_parser`; ``python -m workers.alerts_cli test``
runs it on its own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time

from trading.alerts import KINDS, sample_alert
from workers.temporal_env import SetupError


def add_parser(sub) -> None:  # sub: argparse subparsers of workers/cli.py
    p = sub.add_parser("alerts", help="alerts: send a test alert to Telegram / the webhook")
    actions = p.add_subparsers(dest="alerts_action", required=True, metavar="ACTION")
    t = actions.add_parser("test", help="send a test alert to every configured destination")
    t.add_argument(
        "--kind",
        choices=list(KINDS),
        default="test",
        help="a sample of this alert kind (default: a plain test message)",
    )
    t.set_defaults(func=cmd_alerts_test)


def cmd_alerts_test(args: argparse.Namespace) -> int:
    from activities.alerts import NOT_CONFIGURED, AlertSender
    from workers.cli import load_settings

    settings = load_settings()
    try:
        sender = AlertSender.from_settings(settings)
    except ValueError as err:
        raise SetupError(str(err)) from None
    try:
        if not sender.configured:
            raise SetupError(NOT_CONFIGURED)
        alert = sample_alert(settings.account, now_ms=int(time.time() * 1000), kind=args.kind)
        report = asyncio.run(sender.send_now([alert]))
    finally:
        sender.close()
    delivered = 0
    for d in report.outcomes[0].deliveries:
        if d.outcome in ("sent", "duplicate"):
            delivered += 1
            receipt = f" (message {d.receipt})" if d.receipt else ""
            print(f"{d.destination}: sent{receipt}")
        else:
            print(f"{d.destination}: {d.outcome}: {d.reason}")
    return 0 if delivered else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ocw")
    add_parser(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
    except SetupError as err:
        print(f"ocw: {err}", file=sys.stderr)
        code = 2
    with contextlib.suppress(BrokenPipeError):
        sys.stdout.flush()
    return code


if __name__ == "__main__":
    sys.exit(main(["alerts", *sys.argv[1:]]))
