"""Integrations of keras_ln with other tools; leaves that nothing in keras_ln imports.

- `integrations.h2o_automl`: keras_ln's AutoML against H2O AutoML on the same
  folds and test split (``python -m integrations.h2o_automl --help``).
"""
