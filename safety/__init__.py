"""Crisis detection for the counselling assistant: patterns first, a trained classifier
behind them, a check over the whole conversation, and a screen on the model's answers.

The entry points live in :mod:`qtune.safety.detector`; the UI imports them through
:mod:`qtune.ui.safety`. The labelled messages are in ``safety/data/`` and the classifier
is ``safety/crisis_model.npz``, rebuilt by ``qtune safety train``.
"""
