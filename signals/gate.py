"""The adaptive gate between market ticks and the agent (SPEC §1): most ticks end here.

Every kline update goes through ``Gate.evaluate``; it returns the wake reasons of that tick
(empty: the tick is skipped). Layers, in order:

- G1 a closed candle of the decision interval: always passes, never held by the cooldown;
- G2 the agent's own timer (``next_check_seconds``, clamped) expired;
- G3 |z| >= threshold on the log return of the close or on the volume of a *closed* bar, per
  (symbol, interval); after such a wake that feature is muted for ``mute_s``;
- G4 one of the agent's wake conditions is met (each fires once).

Cooldown: no two wakes within ``cooldown_s`` (G1 and the watchdog excepted); reasons raised
during the cooldown are held and go out with the next wake, at the latest on the first tick
after the cooldown ends. Every duration here is measured on *market time*, the frames' event
time, so a replay at any speed behaves exactly like the live feed (docs/gate.md).

The per-tick path is plain Python on floats and small slotted objects: no pydantic objects are
built per tick; the agent's settings are converted once, when they change.
"""

from __future__ import annotations

import logging
import math
import re
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from signals.kline_frames import unified_symbol
from signals.rolling import RollingStats
from trading.config import Settings, interval_seconds
from trading.models import Bar
from trading.state import GateSettings

log = logging.getLogger(__name__)

MetricProvider = Callable[[str, str], float | None]
"""``(symbol, metric) -> value``; None when the value is not known (never fires)."""

LAYERS = ("G1", "G2", "G3", "G4", "watchdog")
METRICS = ("price", "change_pct_1h", "volume_z", "funding_rate", "oi_change_pct")
PROVIDER_METRICS = frozenset({"funding_rate", "oi_change_pct"})
OPERATORS = ("gt", "lt", "crosses_above", "crosses_below", "abs_change_pct_gt")
_LAYER_OF_PREFIX = {
    "candle_close": "G1",
    "timer": "G2",
    "zscore": "G3",
    "condition": "G4",
    "watchdog": "watchdog",
}
_HOUR_MS = 3_600_000
_NEVER = -(10**18)
_UNSAFE = re.compile(r"[^A-Za-z0-9 .,:;%+\-_/()<>=]")
REASON_TEXT_MAX = 80


@dataclass(frozen=True)
class GateParams:
    """The gate's numbers (SPEC §1 defaults). Durations are market seconds."""

    z_threshold: float = 2.5
    window: int = 50
    min_samples: int = 3
    mute_s: float = 600.0
    cooldown_s: float = 60.0
    timer_min_s: int = 300
    timer_max_s: int = 14_400
    provider_poll_s: float = 60.0  # how often funding / OI conditions ask the provider

    def __post_init__(self) -> None:
        if self.window < 1 or self.min_samples < 2:
            raise ValueError("window must be >= 1 and min_samples >= 2")
        if not 0 < self.timer_min_s <= self.timer_max_s:
            raise ValueError("need 0 < timer_min_s <= timer_max_s")
        if self.z_threshold <= 0 or min(self.mute_s, self.cooldown_s) < 0:
            raise ValueError("z_threshold must be > 0, mute_s and cooldown_s >= 0")
        if self.provider_poll_s <= 0:
            raise ValueError("provider_poll_s must be > 0")

    @classmethod
    def from_settings(cls, settings: Settings) -> GateParams:
        return cls(
            z_threshold=settings.gate_z_threshold,
            window=settings.gate_window,
            min_samples=settings.gate_min_samples,
            mute_s=settings.gate_mute_s,
            cooldown_s=settings.gate_cooldown_s,
            timer_min_s=settings.gate_timer_min_s,
            timer_max_s=settings.gate_timer_max_s,
            provider_poll_s=settings.gate_provider_poll_s,
        )


@dataclass
class GateCounters:
    """What the gate saw and did. ``by_layer``: reasons raised; ``woken_by_layer``: wakes
    that carried at least one reason of the layer."""

    ticks: int = 0
    skipped: int = 0
    woken: int = 0
    by_layer: dict[str, int] = field(default_factory=dict)
    woken_by_layer: dict[str, int] = field(default_factory=dict)
    deferred: int = 0  # reasons held back by the cooldown
    delivered_late: int = 0  # held reasons delivered with a later wake
    muted: int = 0  # z-scores over the threshold inside their feature's mute
    return_gaps: int = 0  # closes not contiguous with the previous one: no return sample
    conditions_active: int = 0
    conditions_fired: int = 0
    conditions_rejected: int = 0
    provider_errors: int = 0
    settings_version: int = 0

    @property
    def skip_rate(self) -> float:
        return self.skipped / self.ticks if self.ticks else 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "ticks": self.ticks,
            "skipped": self.skipped,
            "woken": self.woken,
            "skip_rate": round(self.skip_rate, 6),
            "by_layer": dict(self.by_layer),
            "woken_by_layer": dict(self.woken_by_layer),
            "deferred": self.deferred,
            "delivered_late": self.delivered_late,
            "muted": self.muted,
            "return_gaps": self.return_gaps,
            "conditions_active": self.conditions_active,
            "conditions_fired": self.conditions_fired,
            "conditions_rejected": self.conditions_rejected,
            "provider_errors": self.provider_errors,
            "settings_version": self.settings_version,
        }


def reason_layer(reason: str) -> str:
    """The layer (G1..G4, watchdog) a reason string comes from."""
    return _LAYER_OF_PREFIX.get(reason.partition(":")[0], "other")


def reason_symbol(reason: str) -> str | None:
    """The symbol a per-symbol reason is about (G1, G3, G4); None for timer and watchdog."""
    kind, _, rest = reason.partition(":")
    if kind not in ("candle_close", "zscore", "condition"):
        return None
    symbol = rest.partition(":")[0]
    return symbol or None


def sanitize_text(text: str, limit: int = REASON_TEXT_MAX) -> str:
    """Agent-written text inside a reason: one line, a safe character set, bounded length."""
    cleaned = _UNSAFE.sub("", " ".join(text.split()))
    return cleaned[:limit].strip()


class _Series:
    """Return and volume trackers of one (symbol, interval)."""

    __slots__ = (
        "prev_close",
        "prev_open",
        "ret",
        "ret_muted_until",
        "step_ms",
        "vol",
        "vol_muted_until",
    )

    def __init__(self, step_ms: int, window: int) -> None:
        self.step_ms = step_ms
        self.prev_close = 0.0
        self.prev_open = _NEVER
        self.ret = RollingStats(window)
        self.vol = RollingStats(window)
        self.ret_muted_until = _NEVER
        self.vol_muted_until = _NEVER


class _Condition:
    """One armed agent wake condition, parsed once."""

    __slots__ = (
        "fired",
        "label",
        "metric",
        "next_poll_ms",
        "op",
        "prev",
        "ref",
        "symbol",
        "threshold",
    )

    def __init__(self, symbol: str, metric: str, op: str, threshold: float, label: str) -> None:
        self.symbol = symbol
        self.metric = metric
        self.op = op
        self.threshold = threshold
        self.label = label
        self.ref: float | None = None  # value when set (abs_change_pct_gt)
        self.prev: float | None = None  # last value seen (crosses_*)
        self.next_poll_ms = _NEVER
        self.fired = False

    def check(self, value: float) -> bool:
        """Feed one observation; True when the condition is met by it."""
        op = self.op
        thr = self.threshold
        if op == "gt":
            return value > thr
        if op == "lt":
            return value < thr
        if op == "abs_change_pct_gt":
            ref = self.ref
            if ref is None:
                self.ref = value
                return False
            if ref == 0.0:  # no base to be relative to: measure the change itself
                return abs(value) > thr
            return abs(value - ref) > thr * abs(ref)
        prev = self.prev
        self.prev = value
        if prev is None:
            return False
        if op == "crosses_above":
            return prev < thr <= value
        return prev > thr >= value  # crosses_below


class Gate:
    """Four-layer adaptive gate with cooldown, mutes and watchdog; see the module docstring."""

    def __init__(
        self,
        decision_interval: str,
        *,
        params: GateParams | None = None,
        metric_provider: MetricProvider | None = None,
        symbols: Sequence[str] | None = None,
    ) -> None:
        interval_seconds(decision_interval)  # validates
        self.decision_interval = decision_interval
        self.params = params or GateParams()
        self.metric_provider = metric_provider
        self.counters = GateCounters()
        p = self.params
        self._z = p.z_threshold
        self._min_samples = p.min_samples
        self._mute_ms = int(p.mute_s * 1000)
        self._cooldown_ms = int(p.cooldown_s * 1000)
        self._poll_ms = int(p.provider_poll_s * 1000)
        self._symbols = list(symbols) if symbols else []
        self._now = _NEVER  # market clock: the latest event time seen
        self._last_wake_ms = _NEVER
        self._pending: list[str] = []
        self._series: dict[tuple[str, str], _Series] = {}
        self._finest: dict[str, int] = {}  # symbol -> finest interval (ms) seen closing
        self._volume_z: dict[str, float | None] = {}  # on the finest interval
        self._history: dict[str, deque[tuple[int, float]]] = {}  # closes for change_pct_1h
        self._last_price: dict[str, float] = {}
        # agent settings (G2, G4)
        self._version: int | None = None
        self._timer_ms: int | None = None
        self._timer_due_ms: int | None = None
        self._timer_label = ""
        self._timer_from_tick = False
        self._cond_spec: list[tuple[str, str, float, str]] | None = None
        self._conds: dict[str, list[_Condition]] = {}

    # ------------------------------------------------------------ hot path

    def evaluate(self, bar: Bar, newly_closed: bool, event_time_ms: int | None = None) -> list[str]:
        """Wake reasons for this tick; empty means the tick is skipped.

        ``event_time_ms`` is the frame's event time (market time); without it the bar's close
        time (closed bars) or open time (bars in progress) stands in.
        """
        c = self.counters
        c.ticks += 1
        if event_time_ms is None:
            event_time_ms = bar.close_time if bar.closed else bar.open_time
        if event_time_ms > self._now:
            self._now = event_time_ms
        now = self._now
        symbol = bar.symbol
        self._last_price[symbol] = bar.close
        g1 = False
        fresh: list[str] | None = None
        if newly_closed:
            if bar.interval == self.decision_interval:
                g1 = True
            fresh = self._on_close(bar, now)
        if self._timer_from_tick and self._timer_ms is not None:
            self._timer_from_tick = False
            self._timer_due_ms = now + self._timer_ms
        due = self._timer_due_ms
        if due is not None and now >= due:
            self._timer_due_ms = None  # re-armed by the wake that delivers it
            fresh = fresh or []
            fresh.append(self._timer_label)
            self._count("G2")
        conds = self._conds.get(symbol)
        if conds:
            fresh = self._check_conditions(symbol, conds, now, fresh)
        pending = self._pending
        held = len(pending)
        if fresh:
            for reason in fresh:
                if reason not in pending:
                    pending.append(reason)
        if g1:
            reason = f"candle_close:{symbol}:{bar.interval}"
            self._count("G1")
            return self._wake(now, [reason], held)
        if pending and now - self._last_wake_ms >= self._cooldown_ms:
            return self._wake(now, [], held)
        if fresh:
            c.deferred += len(fresh)
        c.skipped += 1
        return []

    def _wake(self, now: int, first: list[str], held: int) -> list[str]:
        """Deliver ``first`` plus everything pending; ``held`` of those are from earlier ticks."""
        c = self.counters
        pending = self._pending
        c.delivered_late += held
        reasons = first + [r for r in pending if r not in first]
        pending.clear()
        c.woken += 1
        layers = {reason_layer(r) for r in reasons}
        for layer in layers:
            c.woken_by_layer[layer] = c.woken_by_layer.get(layer, 0) + 1
        if now == _NEVER:  # nothing seen yet (a watchdog before the first frame)
            return reasons
        self._last_wake_ms = now
        if self._timer_ms is not None:  # every wake is a check: the agent's timer restarts
            self._timer_due_ms = now + self._timer_ms
        return reasons

    def _count(self, layer: str) -> None:
        by = self.counters.by_layer
        by[layer] = by.get(layer, 0) + 1

    # ------------------------------------------------------------ G3 and closed-bar state

    def _on_close(self, bar: Bar, now: int, quiet: bool = False) -> list[str] | None:
        """Update the trackers with a closed bar; z-score reasons (G3) it raises, if any.
        ``quiet`` (warm-up) updates the state only."""
        key = (bar.symbol, bar.interval)
        s = self._series.get(key)
        if s is None:
            s = self._new_series(bar)
        out: list[str] | None = None
        close = bar.close
        if s.prev_open != _NEVER:
            if bar.open_time == s.prev_open + s.step_ms:
                r = math.log(close / s.prev_close)
                z = s.ret.zscore(r, self._min_samples)
                s.ret.add(r)
                if z is not None and abs(z) >= self._z and not quiet:
                    if now >= s.ret_muted_until:
                        s.ret_muted_until = now + self._mute_ms
                        out = [f"zscore:{bar.symbol}:{bar.interval}:return:{z:+.2f}"]
                        self._count("G3")
                    else:
                        self.counters.muted += 1
            elif not quiet:
                self.counters.return_gaps += 1
        s.prev_open = bar.open_time
        s.prev_close = close
        volume = bar.volume
        z = s.vol.zscore(volume, self._min_samples)
        s.vol.add(volume)
        if z is not None and abs(z) >= self._z and not quiet:
            if now >= s.vol_muted_until:
                s.vol_muted_until = now + self._mute_ms
                reason = f"zscore:{bar.symbol}:{bar.interval}:volume:{z:+.2f}"
                if out is None:
                    out = [reason]
                else:
                    out.append(reason)
                self._count("G3")
            else:
                self.counters.muted += 1
        symbol = bar.symbol
        if s.step_ms <= self._finest.get(symbol, s.step_ms):
            self._finest[symbol] = s.step_ms
            self._volume_z[symbol] = z
        history = self._history.get(symbol)
        if history is None:
            history = self._history[symbol] = deque()
        if not history or bar.close_time > history[-1][0]:
            history.append((bar.close_time, close))
            # trimmed on every close, armed condition or not: the 1 h change needs the latest
            # close at least an hour old and nothing before it (it grew without bound before)
            _trim_history(history, bar.close_time - _HOUR_MS)
        return out

    def _new_series(self, bar: Bar) -> _Series:
        s = _Series(interval_seconds(bar.interval) * 1000, self.params.window)
        self._series[(bar.symbol, bar.interval)] = s
        return s

    def warm_up(self, bars: Iterable[Bar]) -> int:
        """Feed closed bars (a bootstrap or the replay's warm-up) into the trackers without
        raising reasons, so z-scores and the 1 h change work from the first live tick.
        Returns how many bars were taken."""
        taken = 0
        for bar in sorted((b for b in bars if b.closed), key=lambda b: b.close_time):
            s = self._series.get((bar.symbol, bar.interval))
            if s is not None and bar.open_time <= s.prev_open:
                continue
            self._on_close(bar, bar.close_time, quiet=True)
            self._last_price[bar.symbol] = bar.close
            taken += 1
        return taken

    # ------------------------------------------------------------ G4

    def _value(self, symbol: str, metric: str, now: int) -> float | None:
        if metric == "price":
            return self._last_price.get(symbol)
        if metric == "change_pct_1h":
            return self._change_1h(symbol, now)
        if metric == "volume_z":
            return self._volume_z.get(symbol)
        provider = self.metric_provider
        if provider is None:
            return None
        try:
            value = provider(symbol, metric)
        except Exception as err:  # noqa: BLE001 - a provider must never break the tick path
            self.counters.provider_errors += 1
            log.warning("metric provider failed for %s %s: %s", symbol, metric, err)
            return None
        if value is None:
            return None
        try:
            value = float(value)
        except (TypeError, ValueError):
            self.counters.provider_errors += 1
            return None
        return value if math.isfinite(value) else None

    def _change_1h(self, symbol: str, now: int) -> float | None:
        """Price change (fraction) against the latest close at least 1 h before ``now``."""
        price = self._last_price.get(symbol)
        history = self._history.get(symbol)
        if price is None or not history:
            return None
        cutoff = now - _HOUR_MS
        _trim_history(history, cutoff)
        when, base = history[0]
        if when > cutoff or base <= 0:
            return None
        return price / base - 1.0

    def history_len(self, symbol: str) -> int:
        """Closes kept for the 1 h change of ``symbol`` (bounded by an hour of closes)."""
        return len(self._history.get(symbol, ()))

    def _check_conditions(
        self, symbol: str, conds: list[_Condition], now: int, fresh: list[str] | None
    ) -> list[str] | None:
        hit = False
        for cond in conds:
            metric = cond.metric
            if metric in PROVIDER_METRICS:
                if now < cond.next_poll_ms:
                    continue
                cond.next_poll_ms = now + self._poll_ms
            value = self._value(symbol, metric, now)
            if value is None or not cond.check(value):
                continue
            cond.fired = True
            hit = True
            if fresh is None:
                fresh = []
            fresh.append(cond.label)
            self._count("G4")
            self.counters.conditions_fired += 1
        if hit:
            remaining = [cond for cond in conds if not cond.fired]
            if remaining:
                self._conds[symbol] = remaining
            else:
                del self._conds[symbol]
            self.counters.conditions_active = sum(len(v) for v in self._conds.values())
        return fresh

    # ------------------------------------------------------------ agent settings (G2, G4)

    @property
    def market_time_ms(self) -> int | None:
        """The gate's market clock: the latest event time seen (None before the first)."""
        return None if self._now == _NEVER else self._now

    @property
    def settings_version(self) -> int | None:
        return self._version

    def apply_settings(self, settings: GateSettings, now_ms: int | None = None) -> bool:
        """Take the agent's timer and wake conditions; False when the version is unchanged.

        A list equal to the one already armed keeps its state (conditions that fired stay
        fired, references stay): the DecisionWorkflow bumps the version when only the timer
        changed, and that must not re-arm a condition that has fired.
        """
        if self._version is not None and settings.version == self._version:
            return False
        now = now_ms if now_ms is not None else self._now
        self._version = settings.version
        self.counters.settings_version = settings.version
        p = self.params
        if settings.next_check_seconds is None:
            self._timer_ms = self._timer_due_ms = None
            self._timer_from_tick = False
        else:
            seconds = min(max(settings.next_check_seconds, p.timer_min_s), p.timer_max_s)
            self._timer_ms = seconds * 1000
            self._timer_label = f"timer:{seconds}s"
            base = settings.set_at_ms if settings.set_at_ms is not None else now
            base = max(base, self._last_wake_ms)
            # nothing known yet: the timer starts with the first tick
            self._timer_due_ms = None if base == _NEVER else base + self._timer_ms
            self._timer_from_tick = base == _NEVER
        spec = [(c.metric, c.operator, c.threshold, c.reason) for c in settings.wake_conditions]
        if spec != self._cond_spec:
            self._cond_spec = spec
            self._arm_conditions(spec, now)
        return True

    def _arm_conditions(self, spec: list[tuple[str, str, float, str]], now: int) -> None:
        armed: dict[str, list[_Condition]] = {}
        for metric, op, threshold, reason in spec:
            cond = self._parse_condition(metric, op, threshold, reason)
            if cond is None:
                self.counters.conditions_rejected += 1
                continue
            if cond.metric not in PROVIDER_METRICS or self.metric_provider is not None:
                value = self._value(cond.symbol, cond.metric, now)
                if value is not None:
                    cond.ref = cond.prev = value
            armed.setdefault(cond.symbol, []).append(cond)
        self._conds = armed
        self.counters.conditions_active = sum(len(v) for v in armed.values())

    def _parse_condition(
        self, metric: str, op: str, threshold: float, reason: str
    ) -> _Condition | None:
        text, sep, name = metric.strip().rpartition(":")
        name = name.strip().lower()
        op = op.strip().lower()
        if not sep or name not in METRICS or op not in OPERATORS or not math.isfinite(threshold):
            log.warning("wake condition rejected: %r %r %r", metric[:60], op[:20], threshold)
            return None
        symbol = self._resolve_symbol(text)
        if symbol is None:
            log.warning("wake condition rejected: unknown symbol in %r", metric[:60])
            return None
        label = f"condition:{symbol}:{name} {op} {threshold:g}"
        note = sanitize_text(reason)
        if note:
            label += f" ({note})"
        return _Condition(symbol, name, op, float(threshold), label)

    def _resolve_symbol(self, text: str) -> str | None:
        """``BTC/USDT``, ``BTCUSDT``, ``btc-usdt`` or (within the universe) ``BTC``."""
        key = re.sub(r"[\s/\-_]", "", text).upper()
        if not key:
            return None
        if self._symbols:
            for symbol in self._symbols:
                base, _, quote = symbol.partition("/")
                if key in (base + quote, base):
                    return symbol
            return None
        try:
            return unified_symbol(key)
        except ValueError:
            return None

    # ------------------------------------------------------------ watchdog

    def watchdog(self) -> list[str]:
        """The stream went silent (no frame for the watchdog time) and was reconnected: wake
        with ``watchdog`` plus anything held. Not held by the cooldown: market time stands
        still while no frame arrives, so a held reason would wait for the very frames that
        are missing."""
        self._count("watchdog")
        return self._wake(self._now, ["watchdog"], len(self._pending))

    def pending(self) -> list[str]:
        """Reasons held by the cooldown, in arrival order."""
        return list(self._pending)


def _trim_history(history: deque[tuple[int, float]], cutoff: int) -> None:
    """Drop closes older than the newest one at or before ``cutoff``."""
    while len(history) >= 2 and history[1][0] <= cutoff:
        history.popleft()
