"""Price sources for ``ExchangeSim``: the replay timeline as a ``price_source`` callable.

The demo replays bars through ``signals.replay_server.ReplayServer``; fills must happen at the
prices the engine is seeing, so the source answers the bar in progress at the replay's market
time, along the same path ``partial_bar`` streams (open -> low/high -> close).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Mapping, Sequence

from signals.exchange_sim.prices import PriceSource
from signals.replay_server import partial_bar
from trading.models import Bar


def bars_price_source(bars: Mapping[str, Sequence[Bar]], now_ms: Callable[[], int]) -> PriceSource:
    """``(price, now)`` of each unified symbol at ``now_ms()``; None before its first bar.

    Pass ``lambda: replay.market_time_ms`` to follow a running ``ReplayServer`` (not one that
    loops forever: it shifts its bars in time).
    """
    series = {symbol: list(b) for symbol, b in bars.items() if b}
    opens = {symbol: [bar.open_time for bar in b] for symbol, b in series.items()}

    def source(symbol: str) -> tuple[float, int] | None:
        rows = series.get(symbol)
        if rows is None:
            return None
        now = now_ms()
        index = bisect.bisect_right(opens[symbol], now) - 1
        if index < 0:
            return None
        bar = rows[index]
        if now > bar.close_time:
            return bar.close, now
        span = bar.close_time + 1 - bar.open_time
        fraction = max(0.0, min(1.0, (now - bar.open_time) / span))
        return partial_bar(bar, fraction, bar.open_time, bar.close_time).close, now

    return source
