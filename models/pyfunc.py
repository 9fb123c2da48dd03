"""The MLflow pyfunc face of a bundle, for tools that expect ``mlflow.pyfunc.load_model``.

It returns probabilities (not labels), score and tier. ProX's own scoring skips this layer
(see :mod:`models.score`); it exists so that a registered version is usable on its own by
``mlflow models serve`` or a notebook.
"""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc


class ProxModel(mlflow.pyfunc.PythonModel):
    """Wraps :class:`models.bundle.ModelBundle` stored as the ``bundle`` artifact."""

    def load_context(self, context: Any) -> None:
        from models.bundle import ModelBundle

        self.bundle = ModelBundle.load(context.artifacts["bundle"])

    def predict(self, context: Any, model_input: Any, params: dict[str, Any] | None = None) -> Any:
        import pandas as pd
        import pyarrow as pa

        table = (
            model_input
            if isinstance(model_input, pa.Table)
            else pa.Table.from_pandas(pd.DataFrame(model_input), preserve_index=False)
        )
        X = self.bundle.encoder.transform(table)
        p = self.bundle.predict(X)
        return pd.DataFrame({"probability": p, "score": self.bundle.scores(p), "tier": self.bundle.tiers(p)})
