"""Bounds of every position and risk setting, defined once.

``trading/config.py`` (the settings read from the environment) and the workflow payloads
(``PositionParams``, ``EngineConfig``) use these same annotated types, so a value that the
settings refuse is refused too when it arrives in a ``configure`` update, before it can enter a
workflow's history. Pure pydantic: workflow code imports it.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

# Share of the portfolio: a position's cap, total exposure, a default entry size.
PortfolioFraction = Annotated[float, Field(gt=0, le=1)]
# Drawdown triggers: a loss of the whole account or more is no trigger.
DrawdownFraction = Annotated[float, Field(gt=0, lt=1)]
# A position's safety checks (trading/safety.py): 0 turns a check off.
GuardFraction = Annotated[float, Field(ge=0, lt=1)]
# Hard stop below entry (net): at most half the entry.
StopLossFraction = Annotated[float, Field(ge=0, le=0.5)]
# Gain that arms the trailing stop; the trail's width below the peak.
TrailActivateFraction = Annotated[float, Field(ge=0, le=10)]
TrailFraction = Annotated[float, Field(ge=0, lt=1)]
TrailMultiplier = Annotated[float, Field(gt=0, le=5)]
FeeRate = Annotated[float, Field(ge=0, lt=0.05)]
SlippageBps = Annotated[float, Field(ge=0, lt=500)]
# Scorer thresholds live on the score's own scale [-1, 1].
Score = Annotated[float, Field(ge=-1, le=1)]
# Timer periods in seconds (already on the replay clock where a payload carries them).
SafetyIntervalS = Annotated[float, Field(gt=0, le=3600)]
# (a very long interval, up to 1e9 s, turns the agent layer off, as the parity test does)
AgentIntervalS = Annotated[float, Field(gt=0, le=1e9)]
PositiveHours = Annotated[float, Field(gt=0, le=24 * 365)]
CooloffHours = Annotated[float, Field(ge=0, le=24 * 365)]
Cash = Annotated[float, Field(gt=0, le=1e12)]
Notional = Annotated[float, Field(ge=0, le=1e9)]
# Replay speed factor: 1 is real time; the demo runs at about 10,000.
Speed = Annotated[float, Field(gt=0, le=1e7)]
# Temporal accepts at most 10,000 signals per run: continue-as-new well before.
SignalsPerRun = Annotated[int, Field(ge=1, le=9_000)]

MAX_SIGNALS_PER_RUN_DEFAULT = 5_000

# futures leverage: the setting's default is 1x; no setting can go past the hard maximum
MAX_LEVERAGE = 5
Leverage = Annotated[int, Field(ge=1, le=MAX_LEVERAGE)]

# the liquidation checks of trading/leverage.py use the same hard maximum as the setting
HARD_MAX_LEVERAGE = float(MAX_LEVERAGE)
