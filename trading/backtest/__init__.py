"""Event-driven backtester (SPEC §10): the live pure code, in process, without Temporal.

``data`` aligns bars, features (``features_frame``) and funding; ``policy`` memoises the rule
policy; ``fills`` holds fill prices and intrabar stops; ``engine`` runs one backtest; ``metrics``
scores it; ``walkforward`` searches a grid out of sample; ``hooks`` plugs in the learner, the
macro quadrant and the crypto regime.
"""
